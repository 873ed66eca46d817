"""Reading the co-expression graphs stored by :func:`musegnn_sc.pp.build_coexpression_graph` into arrays.

This module needs only numpy and scipy; the tensors the network consumes are made in :mod:`._module`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy import sparse

from musegnn_sc._keys import OMICS, OMICS_TYPES, SPECIES, TISSUE, GraphKeys
from musegnn_sc._symbols import graph_node_names
from musegnn_sc._validate import resolve_mods

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

Features = Literal["graph", "expression"]


@dataclass
class GraphData:
    """One dataset's co-expression graph, as the model sees it.

    Attributes
    ----------
    name
        Modality name in the MuData.
    omics, tissue, species
        Descriptors of the dataset (from ``uns[graph_key]``).
    genes
        Node names, in ``var`` order: the gene symbols when the graph was built with ``gene_symbols=``, else
        ``var_names``.
    features
        ``n_genes x k`` float32 node features.
    adjacency
        ``n_genes x n_genes`` binary CSR matrix (float32), as stored (self-loops included by the graph builder).
    gene_ids
        The nodes' ``var_names`` when they are named by symbol (``gene_symbols=``), else ``None``.
    """

    name: str
    omics: str
    tissue: str
    species: str
    genes: np.ndarray
    features: np.ndarray
    adjacency: sparse.csr_matrix
    gene_ids: np.ndarray | None = None

    @property
    def n_genes(self) -> int:
        """Number of nodes."""
        return len(self.genes)

    @property
    def n_edges(self) -> int:
        """Number of stored (directed) entries of the adjacency, diagonal included."""
        return int(self.adjacency.nnz)

    @property
    def density(self) -> float:
        """Fraction of the ``n_genes**2`` entries that are edges."""
        return self.n_edges / max(self.n_genes, 1) ** 2


def _as_str(value, default: str) -> str:
    if value is None:
        return default
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    return str(value)


def _unit_rms(feats: np.ndarray) -> np.ndarray:
    """Scale a dataset's node features by one factor so that their root mean square is 1.

    The graph builder's features are principal-component scores of residual profiles over cells, so their scale grows
    with the square root of the number of cells (about 3 for 200 cells, 450 at most for the 7,451-cell Kang data).
    Unscaled, attention logits start in the hundreds: attention is one-hot from the first step, its gradients vanish,
    and softmax probabilities fall into the float32 denormal range, where CPU matrix products run several times
    slower. One factor per dataset keeps the relative weight of the components; expression profiles
    (``features='expression'``) are standardised per gene and have unit root mean square already.
    """
    rms = float(np.sqrt(np.mean(np.square(feats, dtype=np.float64))))
    return feats / np.float32(rms) if rms > 0 else feats


def _expression_profile(adata: AnnData, mask: np.ndarray, layer: str | None) -> np.ndarray:
    """Log-normalised, per-gene standardised expression of the graph's genes across cells (genes x cells)."""
    from musegnn_sc._validate import get_matrix

    X = get_matrix(adata, layer)
    if not sparse.issparse(X) and not isinstance(X, np.ndarray):
        X = X[:]  # a backed matrix (h5py dataset or anndata's sparse dataset), read into memory
        X = X if sparse.issparse(X) else np.asarray(X)
    depth = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
    depth[depth == 0] = 1.0
    sub = X[:, np.flatnonzero(mask)]
    sub = sub.toarray() if sparse.issparse(sub) else np.asarray(sub)
    prof = np.log1p(sub.astype(np.float64) / depth[:, None] * 1e4).T
    prof -= prof.mean(axis=1, keepdims=True)
    sd = prof.std(axis=1, keepdims=True)
    sd[sd == 0] = 1.0
    return (prof / sd).astype(np.float32)


def read_graph(
    adata: AnnData,
    name: str,
    *,
    graph_key: str = "coexpression",
    features: Features = "graph",
    layer: str | None = None,
) -> GraphData:
    """Read one dataset's graph, node features and descriptors; raise a helpful error if there is none."""
    keys = GraphKeys(graph_key)
    if keys.uns not in adata.uns:
        msg = (
            f"Modality {name!r} has no co-expression graph under key {graph_key!r} (`uns[{graph_key!r}]` is missing). "
            "Build one with `msg.pp.build_coexpression_graphs(mdata)` (or `msg.pp.build_coexpression_graph` for this "
            "modality), or pass the `graph_key` the graphs were stored under (an option of "
            "`MuSeGNN.setup_mudata` and `msg.tl.train_musegnn`)."
        )
        raise KeyError(msg)
    info = adata.uns[keys.uns]
    gene_key = info.get("gene_key", keys.gene)
    conn_key = info.get("connectivities_key", keys.connectivities)
    feat_key = info.get("features_key", keys.features)
    for slot, key in (("var", gene_key), ("varp", conn_key)):
        if key not in getattr(adata, slot):
            msg = (
                f"Modality {name!r}: `{slot}[{key!r}]` is missing although `uns[{graph_key!r}]` exists. "
                "The graph was stored incompletely; rebuild it with `msg.pp.build_coexpression_graph`."
            )
            raise KeyError(msg)
    mask = np.asarray(adata.var[gene_key], dtype=bool)
    if mask.sum() < 2:
        msg = f"Modality {name!r}: its graph has {int(mask.sum())} gene(s); at least 2 are needed to train."
        raise ValueError(msg)
    if not adata.var_names.is_unique:
        msg = f"Modality {name!r} has duplicated gene names; call `mdata.mod[{name!r}].var_names_make_unique()`."
        raise ValueError(msg)
    idx = np.flatnonzero(mask)
    genes, gene_ids = graph_node_names(adata, idx, graph_key, what=f"modality {name!r}")
    adj = sparse.csr_matrix(adata.varp[conn_key])[idx][:, idx]
    adj = (adj != 0).astype(np.float32).tocsr()
    adj.sort_indices()
    if features == "graph":
        if feat_key not in adata.varm:
            msg = (
                f"Modality {name!r}: node features `varm[{feat_key!r}]` are missing. Rebuild the graph with "
                "`msg.pp.build_coexpression_graph`, or use `features='expression'` (of `MuSeGNN.setup_mudata`)."
            )
            raise KeyError(msg)
        feats = _unit_rms(np.asarray(adata.varm[feat_key])[idx].astype(np.float32))
    elif features == "expression":
        feats = _expression_profile(adata, mask, layer)
    else:
        msg = f"`features` must be 'graph' or 'expression', got {features!r}."
        raise ValueError(msg)
    if not np.isfinite(feats).all():
        msg = f"Modality {name!r}: node features contain NaN or infinite values; rebuild the graph."
        raise ValueError(msg)
    omics = _as_str(info.get("omics", adata.uns.get(OMICS)), "rna")
    if omics not in OMICS_TYPES:
        warnings.warn(
            f"Modality {name!r} has omics type {omics!r}, not one of {OMICS_TYPES}; it gets its own shared block.",
            UserWarning,
            stacklevel=3,
        )
    return GraphData(
        name=name,
        omics=omics,
        tissue=_as_str(info.get("tissue", adata.uns.get(TISSUE)), "unknown"),
        species=_as_str(info.get("species", adata.uns.get(SPECIES)), "unknown"),
        genes=genes,
        features=feats,
        adjacency=adj,
        gene_ids=gene_ids,
    )


def read_graphs(
    mdata: MuData,
    *,
    graph_key: str = "coexpression",
    mods: Sequence[str] | None = None,
    features: Features = "graph",
    layer: str | None = None,
) -> list[GraphData]:
    """Read the graphs of the chosen modalities (all by default), in MuData order."""
    names = resolve_mods(mdata, mods)
    return [read_graph(mdata.mod[m], m, graph_key=graph_key, features=features, layer=layer) for m in names]
