"""The six metrics of the MuSe-GNN benchmark (paper section 4.1, Appendix H) and the Avg Score / Avg Rank table.

The kernels are plain functions on arrays; :func:`evaluate` reads a gene-level AnnData and the graphs of a MuData
and calls them. Definitions follow the authors' ``benchmark metrics.py``; where it leans on scib, the scib semantics
are reimplemented here (scib needs a compiled extension, scib-metrics pulls JAX).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from musegnn_sc import _logging as logg
from musegnn_sc._keys import EMBEDDING, GraphKeys
from musegnn_sc._symbols import graph_node_names

#: Metric names, in the paper's order. All are "higher is better" and lie in [0, 1].
METRICS = ("AUC", "ASW", "GC", "iLISI", "CGR", "NO")


# --------------------------------------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------------------------------------
def roc_auc(y_true: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Area under the ROC curve (Mann-Whitney U), ties counted half; NaN if one class is empty.

    Equal to :func:`sklearn.metrics.roc_auc_score` (with ``sample_weight``) but several times faster on the
    10^6 entries of a graph: one sort, then per group of tied scores the positive weight times the negative weight
    ranked below it (half of the tied negatives).
    """
    y = np.asarray(y_true, dtype=bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    w = np.ones(y.size) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    w_pos = float(w[y].sum())
    w_neg = float(w[~y].sum())
    if w_pos == 0 or w_neg == 0:
        return float("nan")
    order = np.argsort(s)
    s, y, w = s[order], y[order], w[order]
    group = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1
    pos = np.bincount(group, weights=np.where(y, w, 0.0))
    neg = np.bincount(group, weights=np.where(y, 0.0, w))
    neg_below = np.cumsum(neg) - neg
    return float(np.sum(pos * (neg_below + 0.5 * neg)) / (w_pos * w_neg))


def edge_auc(embedding: np.ndarray, adjacency, *, include_self_loops: bool = True) -> float:
    """Edge AUC of one graph: how well the cosine similarity of two genes' embeddings predicts their edge.

    Parameters
    ----------
    embedding
        ``n x d`` embedding of the graph's nodes, in the adjacency's order.
    adjacency
        ``n x n`` adjacency (dense or sparse); nonzero entries are edges.
    include_self_loops
        Score all ``n**2`` entries, diagonal included, as the authors' script does (the diagonal is an edge whose
        cosine is 1, which favours every method equally). ``False`` scores the off-diagonal entries only.

    Returns
    -------
    The AUC, NaN when the graph has no edges or no non-edges.
    """
    Z = np.asarray(embedding, dtype=np.float64)
    norm = np.linalg.norm(Z, axis=1, keepdims=True)
    norm[norm == 0] = 1.0
    Z = Z / norm
    A = adjacency.toarray() if sparse.issparse(adjacency) else np.asarray(adjacency)
    A = A != 0
    n = Z.shape[0]
    if A.shape != (n, n):
        msg = f"The adjacency is {A.shape} but the embedding has {n} rows; they must describe the same nodes."
        raise ValueError(msg)
    S = Z @ Z.T
    if (A == A.T).all():
        # A symmetric graph: each off-diagonal pair once with weight 2 gives the AUC of all n**2 entries at half
        # the sorting cost.
        upper = np.triu(np.ones((n, n), dtype=bool), k=0 if include_self_loops else 1)
        w = np.where(np.eye(n, dtype=bool)[upper], 1.0, 2.0)
        return roc_auc(A[upper], S[upper], w)
    if include_self_loops:
        return roc_auc(A, S)
    off = ~np.eye(n, dtype=bool)
    return roc_auc(A[off], S[off])


def silhouette_batch(X: np.ndarray, batch: np.ndarray, labels: np.ndarray) -> float:
    """Batch ASW as scib's ``silhouette_batch`` (scaled): mean over label groups of the mean of ``1 - |s_i|``.

    ``s_i`` is the silhouette of cell ``i`` with respect to ``batch`` computed within its label group (Euclidean).
    Groups with one batch, or with as many batches as members, are skipped. 1 = batches perfectly mixed within
    every group, 0 = perfectly separated. NaN if no group qualifies.
    """
    from sklearn.metrics import silhouette_samples

    X = np.asarray(X, dtype=np.float64)
    batch = np.asarray(batch)
    labels = np.asarray(labels)
    means = []
    for lab in pd.unique(labels):
        idx = np.flatnonzero(labels == lab)
        n_batches = len(pd.unique(batch[idx]))
        if n_batches == 1 or n_batches == len(idx):
            continue
        s = silhouette_samples(X[idx], batch[idx], metric="euclidean")
        means.append(np.mean(1.0 - np.abs(s)))
    return float(np.mean(means)) if means else float("nan")


def graph_connectivity(connectivities, labels: np.ndarray) -> float:
    """Scib's graph connectivity: per label, the largest connected component's share of its nodes; then the mean.

    ``connectivities`` is a (symmetric) kNN graph over the same nodes as ``labels``; each label's induced subgraph
    is analysed alone.
    """
    C = sparse.csr_matrix(connectivities)
    labels = np.asarray(labels)
    shares = []
    for lab in pd.unique(labels):
        idx = np.flatnonzero(labels == lab)
        _, comp = connected_components(C[idx][:, idx], directed=True, connection="strong")
        shares.append(np.bincount(comp).max() / len(idx))
    return float(np.mean(shares)) if shares else float("nan")


def lisi_knn(
    distances: np.ndarray,
    indices: np.ndarray,
    labels: np.ndarray,
    *,
    perplexity: float | None = None,
    tol: float = 1e-5,
    max_iter: int = 50,
) -> np.ndarray:
    """Local inverse Simpson index of each point from its kNN, as Harmony and ``scib_metrics.lisi_knn`` compute it.

    For each point, a Gaussian kernel over its neighbours' distances (the point itself excluded) is calibrated by
    bisection on its precision so that its entropy equals ``log(perplexity)``; LISI is the inverse Simpson index of
    the neighbours' labels under that distribution (1 = one label around, ``L`` = ``L`` labels in equal shares).

    Parameters
    ----------
    distances, indices
        ``n x k`` kNN distances (not squared) and indices, each point possibly listed among its own neighbours.
    labels
        Label of each point.
    perplexity
        Effective number of neighbours; default ``floor(k / 3)``.
    tol, max_iter
        Bisection tolerance on the entropy and maximum number of steps.

    Returns
    -------
    LISI per point; NaN where every kernel weight vanishes (scib-metrics returns -1 there).
    """
    D = np.asarray(distances, dtype=np.float64)
    idx = np.asarray(indices)
    n, k = D.shape
    codes = pd.Categorical(np.asarray(labels)).codes
    n_labels = int(codes.max()) + 1 if n else 0
    if perplexity is None:
        perplexity = np.floor(k / 3)
    keep = idx != np.arange(n)[:, None]
    log_u = np.log(perplexity)

    def hbeta(beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            P = np.where(keep, np.exp(-D * beta[:, None]), 0.0)
            sum_p = P.sum(axis=1)
            H = np.where(sum_p == 0, 0.0, np.log(sum_p) + beta * (D * P).sum(axis=1) / sum_p)
            P = np.where(sum_p[:, None] == 0, 0.0, P / sum_p[:, None])
        return H, P

    beta = np.ones(n)
    beta_min = np.full(n, -np.inf)
    beta_max = np.full(n, np.inf)
    H, P = hbeta(beta)
    h_diff = H - log_u
    for _ in range(max_iter):
        active = np.abs(h_diff) > tol
        if not active.any():
            break
        up = active & (h_diff > 0)
        down = active & ~(h_diff > 0)
        beta_min = np.where(up, beta, beta_min)
        beta_max = np.where(down, beta, beta_max)
        new_beta = np.where(
            h_diff > 0,
            np.where(np.isinf(beta_max), beta * 2, (beta + beta_max) / 2),
            np.where(np.isinf(beta_min), beta / 2, (beta + beta_min) / 2),
        )
        beta = np.where(active, new_beta, beta)
        H_new, P_new = hbeta(beta)
        H = np.where(active, H_new, H)
        P = np.where(active[:, None], P_new, P)
        h_diff = H - log_u
    # Probability mass of each label among the neighbours, summed with a sparse one-hot product.
    rows = np.repeat(np.arange(n), k)
    onehot_mass = sparse.csr_matrix((P.ravel(), (rows, codes[idx.ravel()])), shape=(n, max(n_labels, 1)))
    simpson = np.asarray(onehot_mass.multiply(onehot_mass).sum(axis=1)).ravel()
    with np.errstate(divide="ignore"):
        lisi = 1.0 / simpson
    lisi[H == 0] = np.nan
    return lisi


def ilisi(
    distances: np.ndarray,
    indices: np.ndarray,
    batches: np.ndarray,
    *,
    perplexity: float | None = None,
    scale: bool = True,
) -> float:
    """Integration LISI: median LISI of the batch labels, scaled to [0, 1] as ``(iLISI - 1) / (B - 1)``.

    Same definition as ``scib_metrics.ilisi_knn`` (kNN variant); NaN with a single batch when ``scale=True``.
    """
    value = float(np.nanmedian(lisi_knn(distances, indices, batches, perplexity=perplexity)))
    if scale:
        n_batches = len(pd.unique(np.asarray(batches)))
        return (value - 1.0) / (n_batches - 1) if n_batches > 1 else float("nan")
    return value


def common_genes_ratio(genes: np.ndarray, clusters: np.ndarray) -> float:
    """CGR = ``sum_c (n_c / N) (1 - u_c / n_c) = 1 - (sum_c u_c) / N``.

    ``n_c`` nodes in cluster ``c`` carry ``u_c`` distinct gene names: CGR rewards copies of a gene from different
    datasets landing in one cluster (0 when every cluster holds distinct genes).
    """
    df = pd.DataFrame({"gene": np.asarray(genes), "cluster": np.asarray(clusters)})
    if df.empty:
        return float("nan")
    return float(1.0 - df.groupby("cluster", observed=True)["gene"].nunique().sum() / len(df))


def neighbours_overlap(
    neighbours, datasets: np.ndarray, clusters: np.ndarray, *, chunk_size: int = 2048, max_dense: int = 50_000_000
) -> float:
    """NO: within each cluster, mean Jaccard overlap of the graph neighbourhoods of node pairs from different datasets.

    ``sum_c (n_c / N) mean_{(a, b) in c, d(a) != d(b)} |N_a ∩ N_b| / |N_a ∪ N_b|``, where ``N_a`` is the set of gene
    names adjacent to node ``a`` in its own dataset's graph (itself included through its self-loop). A cluster
    without cross-dataset pairs contributes 0. Pairs are ordered in the definition; the Jaccard index is symmetric,
    so the mean over unordered pairs is the same.

    Parameters
    ----------
    neighbours
        ``N x V`` binary sparse matrix: row ``a`` marks the genes (a shared vocabulary of ``V`` names) in ``N_a``.
    datasets
        Dataset of each node.
    clusters
        Cluster of each node.
    chunk_size
        Rows of a cluster processed at a time (memory ``chunk_size x n_c``).
    max_dense
        Largest number of entries of a cluster's neighbourhood matrix densified for BLAS; above it the intersection
        counts come from a sparse product.

    Returns
    -------
    The NO score in [0, 1].
    """
    M = sparse.csr_matrix(neighbours, dtype=np.float32)
    M.data[:] = 1.0
    d_codes = pd.Categorical(np.asarray(datasets)).codes
    clusters = np.asarray(clusters)
    n = M.shape[0]
    if n == 0:
        return float("nan")
    total = 0.0
    for lab in pd.unique(clusters):
        idx = np.flatnonzero(clusters == lab)
        dc = d_codes[idx]
        if len(pd.unique(dc)) < 2:
            continue
        Mc = M[idx]
        cols = np.unique(Mc.indices)
        Mc = Mc[:, cols]
        size = np.asarray(Mc.sum(axis=1), dtype=np.float64).ravel()
        dense = Mc.shape[0] * Mc.shape[1] <= max_dense
        Md = Mc.toarray() if dense else None
        jac_sum = 0.0
        n_pairs = 0
        for start in range(0, len(idx), chunk_size):
            stop = min(start + chunk_size, len(idx))
            # float32 products of 0/1 rows count exactly up to 2**24 shared genes.
            inter = Md[start:stop] @ Md.T if dense else (Mc[start:stop] @ Mc.T).toarray()
            inter = inter.astype(np.float64)
            union = size[start:stop, None] + size[None, :] - inter
            cross = dc[start:stop, None] != dc[None, :]
            with np.errstate(divide="ignore", invalid="ignore"):
                jac = np.where(union > 0, inter / union, 0.0)
            jac_sum += float(jac[cross].sum())
            n_pairs += int(cross.sum())
        total += len(idx) / n * (jac_sum / n_pairs)
    return float(total)


# --------------------------------------------------------------------------------------------------------------------
# reading inputs
# --------------------------------------------------------------------------------------------------------------------
def _graph_of(adata: AnnData, name: str, graph_key: str) -> tuple[np.ndarray, sparse.csr_matrix]:
    """Node names and binary adjacency (CSR) of one dataset's co-expression graph."""
    keys = GraphKeys(graph_key)
    info = adata.uns.get(keys.uns, {})
    gene_key = info.get("gene_key", keys.gene)
    conn_key = info.get("connectivities_key", keys.connectivities)
    if conn_key not in adata.varp or gene_key not in adata.var:
        msg = (
            f"Modality {name!r} has no co-expression graph under key {graph_key!r} (`varp[{conn_key!r}]` or "
            f"`var[{gene_key!r}]` missing). Build graphs with `msg.pp.build_coexpression_graphs(mdata)` or pass the "
            "`graph_key` they were stored under."
        )
        raise KeyError(msg)
    mask = np.asarray(adata.var[gene_key], dtype=bool)
    idx = np.flatnonzero(mask)
    adj = sparse.csr_matrix(adata.varp[conn_key])[idx][:, idx]
    adj = (adj != 0).astype(np.float32).tocsr()
    names, _ = graph_node_names(adata, idx, graph_key, what=f"modality {name!r}")
    return np.asarray(names).astype(str), adj


def _common_mask(genes: np.ndarray, datasets: np.ndarray, min_datasets: int | None = None) -> np.ndarray:
    """Rows whose gene is present in every dataset of the table (or in at least ``min_datasets``)."""
    df = pd.DataFrame({"gene": genes, "dataset": datasets})
    need = df["dataset"].nunique() if min_datasets is None else min_datasets
    per_gene = df.groupby("gene", observed=True)["dataset"].nunique()
    return pd.Index(per_gene.index[per_gene >= need]).get_indexer(genes) >= 0


def _knn(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean kNN of every row among all rows (itself included, as scanpy and pynndescent return it)."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, X.shape[0])
    return NearestNeighbors(n_neighbors=k).fit(X).kneighbors(X)


def umap_connectivities(distances: np.ndarray, indices: np.ndarray, *, n_iter: int = 64) -> sparse.csr_matrix:
    """UMAP's fuzzy simplicial set of a kNN graph, the connectivities of :func:`scanpy.pp.neighbors`.

    For point ``i`` with nearest non-zero distance ``rho_i``, ``sigma_i`` solves
    ``sum_j exp(-max(d_ij - rho_i, 0) / sigma_i) = log2(k)`` by bisection (over the ``k - 1`` neighbours after the
    first, as umap-learn); ``w_ij = exp(-max(d_ij - rho_i, 0) / sigma_i)`` (0 for ``i`` itself) and the graph is
    symmetrised as ``W + W^T - W * W^T``. Vectorised numpy, so that no numba compilation (tens of seconds on a
    cold start) is needed.
    """
    D = np.asarray(distances, dtype=np.float64)
    idx = np.asarray(indices)
    n, k = D.shape
    target = np.log2(k)
    masked = np.where(D > 0, D, np.inf)
    rho = masked.min(axis=1)
    rho[~np.isfinite(rho)] = 0.0
    excess = np.maximum(D[:, 1:] - rho[:, None], 0.0)
    lo = np.zeros(n)
    hi = np.full(n, np.inf)
    mid = np.ones(n)
    done = np.zeros(n, dtype=bool)
    for _ in range(n_iter):
        psum = np.exp(-excess / mid[:, None]).sum(axis=1)
        done |= np.abs(psum - target) < 1e-5
        if done.all():
            break
        over = (psum > target) & ~done
        under = (psum <= target) & ~done
        hi = np.where(over, mid, hi)
        lo = np.where(under, mid, lo)
        mid = np.where(
            over, (lo + hi) / 2, np.where(under & np.isinf(hi), mid * 2, np.where(under, (lo + hi) / 2, mid))
        )
    sigma = np.where(rho > 0, np.maximum(mid, 1e-3 * D.mean(axis=1)), np.maximum(mid, 1e-3 * D.mean()))
    with np.errstate(over="ignore"):
        W = np.exp(-np.maximum(D - rho[:, None], 0.0) / sigma[:, None])
    W[idx == np.arange(n)[:, None]] = 0.0
    G = sparse.csr_matrix((W.ravel(), (np.repeat(np.arange(n), k), idx.ravel())), shape=(n, n))
    G.eliminate_zeros()
    Gt = G.T.tocsr()
    return (G + Gt - G.multiply(Gt)).tocsr()


def leiden(connectivities, *, resolution: float = 1.0, n_iterations: int = 2, seed: int = 0) -> np.ndarray:
    """Leiden clusters (weighted modularity) with igraph, as ``sc.tl.leiden(flavor="igraph")``; labels as strings."""
    import random

    import igraph as ig

    C = sparse.triu(sparse.csr_matrix(connectivities), k=1).tocoo()
    g = ig.Graph(n=C.shape[0], edges=np.column_stack([C.row, C.col]).tolist(), directed=False)
    g.es["weight"] = C.data.tolist()
    ig.set_random_number_generator(random.Random(seed))
    try:
        part = g.community_leiden(
            objective_function="modularity", weights="weight", resolution=resolution, n_iterations=n_iterations
        )
    finally:
        ig.set_random_number_generator(random)
    return np.asarray(part.membership).astype(str)


def _leiden(X: np.ndarray, *, n_neighbors: int, resolution: float, seed: int) -> tuple[np.ndarray, sparse.csr_matrix]:
    """Exact kNN, UMAP connectivities and Leiden: what ``sc.pp.neighbors`` + ``sc.tl.leiden`` compute."""
    dist, ind = _knn(X, n_neighbors)
    conn = umap_connectivities(dist, ind)
    return leiden(conn, resolution=resolution, seed=seed), conn


def evaluate(
    gdata: AnnData,
    mdata: MuData,
    *,
    use_rep: str = EMBEDDING,
    graph_key: str = "coexpression",
    leiden_key: str | None = None,
    dataset_key: str = "dataset",
    gene_key: str = "gene",
    n_neighbors: int = 15,
    resolution: float = 1.0,
    ilisi_neighbors: int = 90,
    include_self_loops: bool = True,
    common_min_datasets: int | None = None,
    metrics: Sequence[str] = METRICS,
    seed: int = 0,
) -> pd.Series:
    """Score gene embeddings with the six metrics of the MuSe-GNN benchmark.

    Each metric lies in [0, 1], higher is better. "Common genes" are genes present in every dataset of ``gdata``.

    - **AUC** (edge AUC): per dataset, ROC AUC of the cosine similarity of two genes' embeddings for the presence of
      an edge in the dataset's co-expression graph (all ``n**2`` entries by default, as the authors); mean over
      datasets.
    - **ASW** (common-genes batch ASW): scib's ``silhouette_batch`` on the common genes, batch = dataset, groups =
      Leiden clusters (0, not scib's NaN, when no cluster holds common genes of two datasets).
    - **GC** (common-genes graph connectivity): the kNN graph of all genes restricted to the common genes; per Leiden
      cluster, the largest connected component's share; mean over clusters.
    - **iLISI** (common-genes integration LISI): **kNN variant** (``scib_metrics.ilisi_knn``): exact Euclidean
      ``ilisi_neighbors``-NN among the common genes, perplexity ``k // 3``, median, scaled ``(x - 1) / (B - 1)``.
      The authors used scib's graph variant (``ilisi_graph``, compiled shortest-path neighbourhoods), whose values
      are not comparable.
    - **CGR** (common-genes ratio): ``1 - sum_c (distinct genes in cluster c) / N``: copies of a gene from different
      datasets sharing a cluster.
    - **NO** (neighbours overlap): within each cluster, mean Jaccard overlap of the co-expression neighbourhoods (gene
      names, self included) of node pairs from different datasets, weighted by cluster size.

    Parameters
    ----------
    gdata
        Gene-level AnnData (one row per dataset and gene, ``obs[gene_key]``, ``obs[dataset_key]``), as returned by
        :func:`~musegnn_sc.tl.train_musegnn` or :func:`musegnn_sc.benchmark.run_baseline`. Not modified.
    mdata
        The MuData holding the graphs (``mdata.mod[dataset].varp[f"{graph_key}_connectivities"]``).
    use_rep
        ``gdata.obsm`` key of the embedding.
    graph_key
        Prefix the graphs were stored under by :func:`~musegnn_sc.pp.build_coexpression_graphs`.
    leiden_key
        ``gdata.obs`` column with clusters to use. ``None`` (or a missing column) computes them on a copy: exact
        ``n_neighbors``-NN on ``use_rep`` (:func:`scanpy.pp.neighbors`) then :func:`scanpy.tl.leiden` (igraph,
        2 iterations). The kNN graph for GC is always computed this way.
    dataset_key, gene_key
        ``gdata.obs`` columns with the dataset (modality name) and gene symbol of each row.
    n_neighbors
        Neighbours of the kNN graph used for Leiden and GC (scanpy's default 15, as the authors).
    resolution
        Leiden resolution.
    ilisi_neighbors
        Neighbours of the iLISI kNN (scib's ``k0=90``).
    include_self_loops
        Count the diagonal of each graph in the edge AUC (the authors do).
    common_min_datasets
        "Common genes" are those in every dataset (``None``, the paper's definition) or in at least this many
        datasets: with heterogeneous collections (a spatial panel, another species) few genes are in all graphs.
    metrics
        Subset of ``("AUC", "ASW", "GC", "iLISI", "CGR", "NO")`` to compute.
    seed
        Random state of the kNN graph and Leiden.

    Returns
    -------
    One value per metric, named as in the paper; ``.attrs`` records the numbers of rows, datasets, common genes and
    clusters.

    An external embedding (one row per gene, and its dataset is not a modality of ``mdata``, e.g. Gene2vec read with
    :func:`musegnn_sc.io.read_gene_embedding`) has one vector per gene and no per-dataset copies, so only **AUC** is
    defined for it: per graph of ``mdata``, the edge AUC on the subgraph of the graph's genes found in the embedding
    (matched by gene name), averaged over graphs. ASW, GC, iLISI, CGR and NO measure how a method integrates the
    copies of a gene from different datasets; with a single copy they would be trivially perfect, so they are left
    out: NaN in the result, with a warning, and ``.attrs['left_out']`` (metric -> reason). ``.attrs`` also holds
    ``auc_per_dataset`` and ``coverage`` (fraction of each graph's genes found in the embedding).

    Examples
    --------
    >>> scores = msg.tl.evaluate(gdata, mdata)  # doctest: +SKIP
    >>> scores["AUC"]  # doctest: +SKIP
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        msg = f"Unknown metric(s) {unknown}; choose from {list(METRICS)}."
        raise ValueError(msg)
    for col in (dataset_key, gene_key):
        if col not in gdata.obs:
            msg = (
                f"`gdata.obs[{col!r}]` is missing. Pass the gene-level AnnData returned by `msg.tl.train_musegnn` "
                "(or `run_baseline`), or name the column with `dataset_key=` / `gene_key=`."
            )
            raise KeyError(msg)
    if use_rep not in gdata.obsm:
        avail = ", ".join(repr(k) for k in gdata.obsm) or "none"
        msg = f"`gdata.obsm[{use_rep!r}]` is missing (obsm keys: {avail}); pass the embedding's key as `use_rep=`."
        raise KeyError(msg)
    t0 = logg.start("evaluating gene embeddings")
    X = np.asarray(gdata.obsm[use_rep], dtype=np.float64)
    if not np.isfinite(X).all():
        msg = f"`gdata.obsm[{use_rep!r}]` contains NaN or infinite values; the embedding cannot be evaluated."
        raise ValueError(msg)
    genes = np.asarray(gdata.obs[gene_key]).astype(str)
    datasets = np.asarray(gdata.obs[dataset_key]).astype(str)
    names = list(pd.unique(datasets))
    missing = [d for d in names if d not in mdata.mod]
    if len(missing) == len(names) and pd.Index(genes).is_unique:
        # an external embedding (Gene2vec, GenePT, ...): scored against every graph of the MuData by gene name
        result = _evaluate_external(
            gdata,
            mdata,
            use_rep=use_rep,
            gene_key=gene_key,
            graph_key=graph_key,
            metrics=metrics,
            include_self_loops=include_self_loops,
        )
        logg.finish(f"external embedding: {len(result.dropna())} metric(s)", t0)
        return result
    if missing:
        msg = (
            f"Datasets {missing} of `gdata.obs[{dataset_key!r}]` are not modalities of the MuData "
            f"(it has {list(mdata.mod)}). Pass the MuData the embedding was trained on (an external embedding, "
            "scored on the edge AUC only, has one row per gene: see `msg.io.read_gene_embedding`)."
        )
        raise KeyError(msg)
    graphs = {d: _graph_of(mdata.mod[d], d, graph_key) for d in names}

    need_clusters = {"ASW", "GC", "CGR", "NO"} & set(metrics)
    clusters = None
    conn = None
    if need_clusters:
        if leiden_key is not None and leiden_key in gdata.obs:
            clusters = np.asarray(gdata.obs[leiden_key]).astype(str)
        if clusters is None:
            clusters, conn = _leiden(X, n_neighbors=n_neighbors, resolution=resolution, seed=seed)
        elif "GC" in metrics:
            conn = umap_connectivities(*_knn(X, n_neighbors))
    if common_min_datasets is not None and common_min_datasets < 2:
        msg = f"`common_min_datasets` must be at least 2 (a gene shared by two datasets), got {common_min_datasets}."
        raise ValueError(msg)
    common = _common_mask(genes, datasets, common_min_datasets)

    out: dict[str, float] = {}
    for metric in metrics:
        if metric == "AUC":
            aucs = []
            for d in names:
                node_genes, adj = graphs[d]
                rows = np.flatnonzero(datasets == d)
                pos = pd.Index(node_genes).get_indexer(genes[rows])
                if (pos < 0).any():
                    bad = genes[rows][pos < 0][:5].tolist()
                    msg = f"Genes {bad} of dataset {d!r} in `gdata` are not nodes of its graph {graph_key!r}."
                    raise ValueError(msg)
                aucs.append(edge_auc(X[rows], adj[pos][:, pos], include_self_loops=include_self_loops))
            out[metric] = float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")
        elif metric == "ASW":
            value = silhouette_batch(X[common], datasets[common], clusters[common])
            # No cluster holds two datasets' copies of the common genes: no mixing at all, the worst score (scib
            # returns NaN, which would drop the metric from a method's Avg Score and reward the separation).
            out[metric] = 0.0 if np.isnan(value) and common.any() else value
        elif metric == "GC":
            out[metric] = graph_connectivity(conn[common][:, common], clusters[common]) if common.any() else np.nan
        elif metric == "iLISI":
            if common.sum() < 2:
                out[metric] = float("nan")
            else:
                dist, ind = _knn(X[common], ilisi_neighbors)
                out[metric] = ilisi(dist, ind, datasets[common])
        elif metric == "CGR":
            out[metric] = common_genes_ratio(genes, clusters)
        elif metric == "NO":
            out[metric] = neighbours_overlap(_neighbour_matrix(genes, datasets, graphs), datasets, clusters)
    result = pd.Series(out, name=use_rep, dtype=float)
    result.attrs = {
        "n_rows": int(len(genes)),
        "n_datasets": len(names),
        "n_common_genes": int(len(np.unique(genes[common]))),
        "n_clusters": int(len(np.unique(clusters))) if clusters is not None else 0,
    }
    logg.finish(f"{len(out)} metrics", t0)
    return result


#: Why each metric but AUC is left out for an external embedding (one vector per gene).
_EXTERNAL_REASON = (
    "needs one embedding per (dataset, gene): it measures how the copies of a gene from different datasets are "
    "integrated, which an external embedding with one vector per gene does not have (it would score trivially)"
)


def _evaluate_external(
    gdata: AnnData,
    mdata: MuData,
    *,
    use_rep: str,
    gene_key: str,
    graph_key: str,
    metrics: Sequence[str],
    include_self_loops: bool,
) -> pd.Series:
    """Edge AUC of an external gene embedding on every co-expression graph of ``mdata`` (genes matched by name)."""
    import warnings

    from musegnn_sc._symbols import identifier_hint

    from ._coherence import gene_vectors

    mods = [m for m in mdata.mod if GraphKeys(graph_key).uns in mdata.mod[m].uns]
    if not mods:
        msg = (
            f"No modality of the MuData has a co-expression graph under key {graph_key!r}. Build them with "
            "`msg.pp.build_coexpression_graphs(mdata)` or pass the `graph_key` they were stored under."
        )
        raise KeyError(msg)
    vec = gene_vectors(gdata, use_rep=use_rep, gene_key=gene_key)
    index = pd.Index(vec.index)
    V = vec.to_numpy()
    out = {m: float("nan") for m in metrics}
    per_dataset, coverage = {}, {}
    all_nodes = []
    for d in mods:
        node_genes, adj = _graph_of(mdata.mod[d], d, graph_key)
        all_nodes.append(node_genes)
        pos = index.get_indexer(node_genes)
        found = np.flatnonzero(pos >= 0)
        coverage[d] = len(found) / max(len(node_genes), 1)
        per_dataset[d] = (
            edge_auc(V[pos[found]], adj[found][:, found], include_self_loops=include_self_loops)
            if len(found) >= 2
            else float("nan")
        )
    aucs = np.array(list(per_dataset.values()))
    if "AUC" in out:
        out["AUC"] = float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")
        if not np.isfinite(aucs).any():
            hint = identifier_hint(
                index, np.concatenate(all_nodes), ours_name="embedded genes", theirs_name="graph genes"
            )
            warnings.warn(
                f"No graph of the MuData has two genes found in the external embedding; AUC is NaN. Likely cause: "
                f"{hint}.",
                UserWarning,
                stacklevel=3,
            )
    left_out = {m: _EXTERNAL_REASON for m in metrics if m != "AUC"}
    if left_out:
        warnings.warn(
            f"External embedding (its datasets are not modalities of the MuData): {', '.join(left_out)} left out "
            f"(NaN), as each {_EXTERNAL_REASON}. Pass `metrics=('AUC',)` to compute the edge AUC only.",
            UserWarning,
            stacklevel=3,
        )
    result = pd.Series(out, name=use_rep, dtype=float)
    result.attrs = {
        "n_rows": int(gdata.n_obs),
        "n_datasets": len(mods),
        "n_genes_embedded": int(len(index)),
        "external": True,
        "left_out": left_out,
        "auc_per_dataset": per_dataset,
        "coverage": coverage,
    }
    return result


def _neighbour_matrix(genes: np.ndarray, datasets: np.ndarray, graphs: dict) -> sparse.csr_matrix:
    """Row ``r``: the gene names adjacent to ``genes[r]`` in the graph of ``datasets[r]``, over a shared vocabulary."""
    vocab = pd.Index(pd.unique(np.concatenate([g for g, _ in graphs.values()])))
    n = len(genes)
    blocks = []
    order = []
    for d, (node_genes, adj) in graphs.items():
        rows = np.flatnonzero(datasets == d)
        if rows.size == 0:
            continue
        pos = pd.Index(node_genes).get_indexer(genes[rows])
        if (pos < 0).any():
            bad = genes[rows][pos < 0][:5].tolist()
            msg = f"Genes {bad} of dataset {d!r} in `gdata` are not nodes of its graph."
            raise ValueError(msg)
        sub = adj[pos].tocoo()
        col_map = vocab.get_indexer(node_genes)
        blocks.append(
            sparse.csr_matrix(
                (np.ones(sub.nnz, np.float32), (sub.row, col_map[sub.col])), shape=(len(rows), len(vocab))
            )
        )
        order.append(rows)
    M = sparse.vstack(blocks).tocsr()
    perm = np.empty(n, dtype=np.int64)
    perm[np.concatenate(order)] = np.arange(n)
    return M[perm]


def score_methods(
    table: pd.DataFrame,
    *,
    metrics: Sequence[str] | None = None,
    method_key: str = "method",
    seed_key: str = "seed",
    lower_is_better: Sequence[str] = (),
) -> pd.DataFrame:
    """Avg Score and Avg Rank of several methods, as in the paper's Table 1.

    Seeds are first averaged per method. **Avg Score**: each metric is min-max scaled across methods
    (``(x - min) / (max - min)``; a metric equal for every method carries no information and is left out of the
    mean), then averaged over metrics, in [0, 1]. **Avg Rank**: methods are ranked per metric (1 = best, ties get
    their average rank), then ranks are averaged, in [1, n_methods].

    Parameters
    ----------
    table
        One row per method, or per method and seed: the method in the index (or in a ``method_key`` column or index
        level), the seed (optional) in a ``seed_key`` column or index level, and one column per metric.
    metrics
        Metric columns to use; default every numeric column other than the seed.
    method_key, seed_key
        Names of the method and seed columns (or index levels).
    lower_is_better
        Metrics for which lower values are better (none of the six); their scaling and ranking are reversed.

    Returns
    -------
    One row per method (sorted by ``avg_score``, best first): the mean of each metric, ``{metric}_std`` over seeds
    when seeds are given (sample standard deviation, ``ddof=1``), ``avg_score``, ``avg_rank``, and with seeds
    ``avg_score_std`` / ``avg_rank_std``: the spread of the per-seed scores (each seed scaled and ranked on its own),
    and ``n_seeds``.

    Examples
    --------
    >>> import pandas as pd
    >>> import musegnn_sc as msg
    >>> table = pd.DataFrame(
    ...     {"method": ["musegnn", "musegnn", "pca", "pca"], "seed": [0, 1, 0, 1], "AUC": [0.9, 0.88, 0.6, 0.62]}
    ... )
    >>> msg.tl.score_methods(table)[["avg_score", "avg_rank"]]
    """
    df = table.copy()
    if isinstance(df.index, pd.MultiIndex) or df.index.name in (method_key, seed_key):
        df = df.reset_index()
    elif method_key not in df.columns:
        df = df.rename_axis(method_key).reset_index()
    if method_key not in df.columns:
        msg = f"No method column: name the index (or a column) {method_key!r}, or pass `method_key=`."
        raise KeyError(msg)
    has_seed = seed_key in df.columns
    if metrics is None:
        metrics = [c for c in df.columns if c not in (method_key, seed_key) and pd.api.types.is_numeric_dtype(df[c])]
    metrics = list(metrics)
    missing = [m for m in metrics if m not in df.columns]
    if missing:
        msg = f"Metric columns {missing} are not in the table (columns: {list(df.columns)})."
        raise KeyError(msg)
    if not metrics:
        msg = "The table has no numeric metric column to score."
        raise ValueError(msg)

    def _scores(means: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
        signed = means.copy()
        for m in lower_is_better:
            if m in signed:
                signed[m] = -signed[m]
        lo, hi = signed.min(), signed.max()
        span = (hi - lo).where(hi > lo)
        scaled = (signed - lo) / span
        ranks = signed.rank(ascending=False, method="average")
        return scaled.mean(axis=1, skipna=True), ranks.mean(axis=1, skipna=True)

    grouped = df.groupby(method_key, sort=False)[metrics]
    means = grouped.mean()
    out = means.copy()
    out["avg_score"], out["avg_rank"] = _scores(means)
    if has_seed:
        stds = grouped.std(ddof=1).add_suffix("_std")
        out = out.join(stds)
        per_seed = []
        for seed, part in df.groupby(seed_key, sort=False):
            s, r = _scores(part.groupby(method_key, sort=False)[metrics].mean())
            per_seed.append(pd.DataFrame({"avg_score": s, "avg_rank": r, seed_key: seed}))
        ps = pd.concat(per_seed).groupby(level=0)
        out["avg_score_std"] = ps["avg_score"].std(ddof=1)
        out["avg_rank_std"] = ps["avg_rank"].std(ddof=1)
        out["n_seeds"] = df.groupby(method_key, sort=False)[seed_key].nunique()
    return out.sort_values(["avg_score", "avg_rank"], ascending=[False, True])
