"""Index sets of a pair of graphs: common genes with their Jaccard weights, different genes, neighbour sampling.

Plain numpy/scipy kernels (no torch), following the paper's section 3.5-3.7:

- ``Common_ij``: genes present in both graphs, matched by name, in graph ``i``'s order.
- ``lambda_ijg = |N_i(g) & N_j(g)| / |N_i(g) | N_j(g)|`` (paper eq. 5), with ``N`` the graph neighbourhood matched by gene
  name. The graphs keep self-loops (as the reference does), so ``g`` belongs to its own neighbourhood in both graphs.
- ``Diff_i``: genes of ``i`` absent from ``j``; their positives for InfoNCE are graph neighbours drawn afresh at each step.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from scipy import sparse


@dataclass(frozen=True)
class PairIndex:
    """Index sets of the ordered pair ``(i, j)``.

    Attributes
    ----------
    common_i, common_j
        Positions of the common genes in graph ``i`` and in graph ``j`` (same gene at the same position).
    weights
        ``lambda_ijg`` for each common gene (float32).
    diff_i, diff_j
        Positions of the genes of ``i`` absent from ``j``, and of the genes of ``j`` absent from ``i``.
    """

    common_i: np.ndarray
    common_j: np.ndarray
    weights: np.ndarray
    diff_i: np.ndarray
    diff_j: np.ndarray

    @property
    def n_common(self) -> int:
        """Number of common genes."""
        return len(self.common_i)


def common_genes(genes_i: np.ndarray, genes_j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the genes present in both lists, in the order of ``genes_i``."""
    pos_j = {g: k for k, g in enumerate(genes_j)}
    ci = np.array([k for k, g in enumerate(genes_i) if g in pos_j], dtype=np.int32)
    cj = np.array([pos_j[genes_i[k]] for k in ci], dtype=np.int32)
    return ci, cj


def jaccard_weights(
    adj_i: sparse.csr_matrix, adj_j: sparse.csr_matrix, common_i: np.ndarray, common_j: np.ndarray
) -> np.ndarray:
    """Jaccard overlap of the neighbourhoods of each common gene in the two graphs (paper eq. 5).

    Only common genes can be neighbours in both graphs, so the intersection is counted on the common-gene subgraphs
    and the union as ``deg_i + deg_j - intersection`` with the full degrees.
    """
    if len(common_i) == 0:
        return np.zeros(0, dtype=np.float32)
    a = (adj_i != 0).astype(np.float32).tocsr()
    b = (adj_j != 0).astype(np.float32).tocsr()
    inter = np.asarray(a[common_i][:, common_i].multiply(b[common_j][:, common_j]).sum(axis=1)).ravel()
    deg_i = np.asarray(a.sum(axis=1)).ravel()[common_i]
    deg_j = np.asarray(b.sum(axis=1)).ravel()[common_j]
    union = deg_i + deg_j - inter
    out = np.zeros_like(inter, dtype=np.float64)
    np.divide(inter, union, out=out, where=union > 0)
    return out.astype(np.float32)


def pair_index(genes_i, adj_i, genes_j, adj_j) -> PairIndex:
    """All index sets of the ordered pair ``(i, j)``."""
    ci, cj = common_genes(genes_i, genes_j)
    in_i = np.zeros(len(genes_i), dtype=bool)
    in_i[ci] = True
    in_j = np.zeros(len(genes_j), dtype=bool)
    in_j[cj] = True
    return PairIndex(
        common_i=ci,
        common_j=cj,
        weights=jaccard_weights(adj_i, adj_j, ci, cj),
        diff_i=np.flatnonzero(~in_i).astype(np.int32),
        diff_j=np.flatnonzero(~in_j).astype(np.int32),
    )


class PairCache:
    """Lazily computed :class:`PairIndex` of ordered pairs of graphs, the ``max_pairs`` most recently used kept.

    The precomputation of the reference visits all ``T * (T - 1)`` pairs up front in a thread pool; computing a pair
    when it is first sampled costs a few milliseconds and keeps start-up instant for many graphs. Pairs of 1,000-gene
    graphs take about 10 kB each: every pair of the paper's 82 graphs fits in the default bound (6,642 pairs), while a
    thousand graphs (a million pairs, 10 GB) keep only the most recently drawn.
    """

    def __init__(self, genes: list[np.ndarray], adjacencies: list[sparse.csr_matrix], *, max_pairs: int = 8192):
        self.genes = genes
        self.adjacencies = adjacencies
        self.max_pairs = int(max_pairs)
        self._cache: OrderedDict[tuple[int, int], PairIndex] = OrderedDict()

    def __call__(self, i: int, j: int) -> PairIndex:
        """Index sets of the ordered pair ``(i, j)``."""
        key = (i, j)
        if key in self._cache:
            self._cache.move_to_end(key)
        else:
            rev = self._cache.get((j, i))
            if rev is not None:
                # lambda is symmetric; reuse it in i's common-gene order.
                order = np.argsort(rev.common_j, kind="stable")
                self._cache[key] = PairIndex(
                    common_i=rev.common_j[order],
                    common_j=rev.common_i[order],
                    weights=rev.weights[order],
                    diff_i=rev.diff_j,
                    diff_j=rev.diff_i,
                )
            else:
                self._cache[key] = pair_index(self.genes[i], self.adjacencies[i], self.genes[j], self.adjacencies[j])
            while len(self._cache) > self.max_pairs:
                self._cache.popitem(last=False)
        return self._cache[key]

    def n_anchors(self, i: int) -> int:
        """Largest number of genes graph ``i`` shares with any other graph."""
        return max((self(i, j).n_common for j in range(len(self.genes)) if j != i), default=0)


def neighbour_lists(adj: sparse.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """CSR ``(indptr, indices)`` of each node's neighbours other than itself."""
    a = sparse.csr_matrix(adj, copy=True)
    a.setdiag(0)
    a.eliminate_zeros()
    a.sort_indices()
    return a.indptr.astype(np.int64), a.indices.astype(np.int32)  # int32 genes: half the memory of int64


def sample_contrastive(
    rng: np.random.Generator, diff: np.ndarray, indptr: np.ndarray, indices: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw up to ``n`` different genes without replacement, and one graph neighbour of each as its positive.

    The neighbour is drawn uniformly among the gene's neighbours other than itself; a gene without any keeps itself
    (as the reference does). Sampling without replacement avoids the reference's duplicated anchors, which act as
    false negatives.
    """
    if len(diff) == 0 or n <= 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    anchors = rng.choice(diff, size=min(n, len(diff)), replace=False).astype(np.int64)
    if len(indices) == 0:
        return anchors, anchors.copy()
    deg = indptr[anchors + 1] - indptr[anchors]
    offs = np.floor(rng.random(len(anchors)) * np.maximum(deg, 1)).astype(np.int64)
    pos = np.where(deg > 0, indices[np.minimum(indptr[anchors] + offs, len(indices) - 1)], anchors)
    return anchors, pos.astype(np.int64)


def sample_common(
    rng: np.random.Generator, common_i: np.ndarray, common_j: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw up to ``n`` common genes without replacement: their positions in graph ``i`` and in graph ``j``.

    The cross-dataset InfoNCE anchors of ``contrastive_anchors='all'``: anchor ``z_i[g]``, positive ``z_j[g]``.
    """
    if len(common_i) == 0 or n <= 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    pick = rng.choice(len(common_i), size=min(n, len(common_i)), replace=False)
    return common_i[pick].astype(np.int64), common_j[pick].astype(np.int64)
