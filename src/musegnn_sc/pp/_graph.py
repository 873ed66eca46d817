"""Per-dataset co-expression graphs: gene selection, CS-CORE, node features, storage."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData
from scipy import sparse

from musegnn_sc import _keys
from musegnn_sc import _logging as logg
from musegnn_sc._chunks import DEFAULT_CHUNK_SIZE, iter_row_chunks, row_sums
from musegnn_sc._docs import doc_adata_counts, doc_chunk_size, doc_copy, doc_key_added, doc_params
from musegnn_sc._symbols import SYMBOLS_ENTRY, resolve_symbols
from musegnn_sc._validate import (
    check_counts,
    check_shape,
    check_spatial,
    check_unique_var_names,
    get_matrix,
    nonzero_cells,
    resolve_mods,
)

from ._cscore import adjust_pvalues, cscore_irls, device_label, doc_device, resolve_device
from ._residuals import residual_features, select_highly_variable
from ._svg import rank_spatial_genes

Omics = Literal["rna", "atac", "spatial"]
Selection = Literal["pearson_residuals", "sparkx", "moran"]

#: Gene selection used for each data type when ``selection=None`` (the paper's choices).
DEFAULT_SELECTION: dict[str, str] = {"rna": "pearson_residuals", "atac": "pearson_residuals", "spatial": "sparkx"}

_doc_n_top_genes = """\
n_top_genes
    Number of genes per graph: the most variable by analytic Pearson residual variance for RNA and ATAC gene
    activity, the most spatially variable (SPARK-X, or Moran's I) for spatial data. If fewer genes have counts, all
    expressed genes are used (with a warning)."""

_doc_gene_symbols = """\
gene_symbols
    Column of ``var`` holding gene symbols (scanpy's name), for datasets whose ``var_names`` are IDs (Ensembl, ...):
    the graph's nodes are then named by symbol, so the model matches genes across datasets by symbol, and the
    gene-level AnnData keeps both (``obs['gene']`` the symbol, ``obs['gene_id']`` the ID). Rule: genes without a
    symbol (empty or missing) are left out; when several IDs share a symbol, the one with the most counts in the
    dataset is kept and the others are left out (a warning gives both counts). The column is recorded in
    ``uns[key_added]['gene_symbols']``. ``None``: genes are named by ``var_names``."""

_doc_shared_params = """\
pval_cutoff
    Genes ``j, k`` are connected when the CS-CORE p-value of their co-expression is below this cutoff (the paper's
    code: 0.005, raw p-values). Every selected gene is connected to itself (the reference keeps self-loops).
correction
    Multiple-testing correction of the p-values before the cutoff: ``None`` (the paper's code) or ``'fdr_bh'``
    (Benjamini-Hochberg over gene pairs, as the CS-CORE authors suggest).
n_features
    Width of the node features: each selected gene's Pearson-residual profile over cells is reduced by a truncated
    SVD that keeps gene-gene inner products, so the model's first layer does not grow with the number of cells.
    ``None`` stores the full profile (width ``n_cells``), as the authors' code does.
clip
    Clipping of the Pearson residuals used as features: ``'sctransform'`` clips to :math:`\\pm\\sqrt{{n/30}}` as
    Seurat's ``SCTransform`` (the paper's features), ``'pearson'`` to :math:`\\pm\\sqrt{{n}}` as scanpy, or a number.
theta
    Overdispersion of the analytic Pearson residuals (scanpy's default, 100).
spatial_key
    ``adata.obsm`` key with spatial coordinates (spatial data only).
{chunk_size}
{device}
{key_added}"""


@dataclass
class _GraphResult:
    """Everything one dataset's graph writes, computed before anything is stored."""

    cols: np.ndarray  # selected genes, ascending var order
    connectivities: sparse.csr_matrix
    correlation: sparse.csr_matrix
    features: np.ndarray
    rank: np.ndarray  # over all genes, NaN if not ranked
    score: np.ndarray  # over all genes
    info: dict[str, Any] = field(default_factory=dict)


def _uns_value(value: Any) -> Any:
    """Make a parameter storable in ``.h5ad``/``.h5mu`` (which cannot hold ``None``)."""
    if value is None:
        return "none"
    if isinstance(value, np.generic):
        return value.item()
    return value


def resolve_omics(adata: AnnData, omics: str | None, *, name: str | None = None, spatial_key: str = "spatial") -> str:
    """Data type of a dataset: the argument, else ``uns['omics']``, else the modality name's prefix, else a guess.

    The guess: :func:`~musegnn_sc.pp.gene_activity` output is ATAC, a dataset with ``obsm[spatial_key]`` is spatial,
    anything else is RNA.
    """
    if omics is None:
        omics = adata.uns.get(_keys.OMICS)
    if omics is None and name is not None:
        prefix = re.split(r"[_:\-\s]", name, maxsplit=1)[0].lower()
        if prefix in _keys.OMICS_TYPES:
            omics = prefix
    if omics is None:
        if _keys.GENE_ACTIVITY in adata.uns:
            omics = "atac"
        elif spatial_key in adata.obsm:
            omics = "spatial"
        else:
            omics = "rna"
    omics = str(omics).lower()
    if omics not in _keys.OMICS_TYPES:
        msg = f"Unknown omics {omics!r}: use one of {', '.join(map(repr, _keys.OMICS_TYPES))}."
        raise ValueError(msg)
    return omics


def _resolve_genes(
    adata: AnnData, genes, symbols: np.ndarray | None = None, eligible: np.ndarray | None = None
) -> np.ndarray:
    """Integer indices (ascending) of user-given genes (``var_names``, or symbols of eligible genes)."""
    if isinstance(genes, np.ndarray | pd.Series) and np.asarray(genes).dtype == bool:
        mask = np.asarray(genes)
        if mask.shape != (adata.n_vars,):
            msg = f"A boolean `genes` mask must have length n_vars={adata.n_vars}, got {mask.shape}."
            raise ValueError(msg)
        return np.flatnonzero(mask)
    names = pd.Index([genes] if isinstance(genes, str) else list(genes))
    idx = adata.var_names.get_indexer(names)
    if symbols is not None and (idx < 0).any():
        ok = np.flatnonzero(eligible)
        by_symbol = pd.Index(symbols[ok]).get_indexer(names)
        fill = (idx < 0) & (by_symbol >= 0)
        idx[fill] = ok[by_symbol[fill]]
    if (idx < 0).any():
        missing = names[idx < 0]
        shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
        where = "`adata.var_names`" + (" or the gene symbols" if symbols is not None else "")
        msg = f"{len(missing)} gene(s) of `genes` are not in {where}: {shown}."
        raise KeyError(msg)
    if len(np.unique(idx)) != len(idx):
        msg = "`genes` lists a gene more than once."
        raise ValueError(msg)
    return np.sort(idx)


def _parse_clip(clip: str | float | None, n_cells: int) -> float:
    if clip is None or clip == "pearson":
        return float(np.sqrt(n_cells))
    if clip == "sctransform":
        return float(np.sqrt(n_cells / 30))
    value = float(clip)
    if value <= 0:
        msg = f"`clip` must be positive, 'sctransform' or 'pearson'; got {clip!r}."
        raise ValueError(msg)
    return value


def _compute_graph(
    adata: AnnData,
    *,
    omics: str,
    n_top_genes: int,
    layer: str | None,
    genes,
    selection: str | None,
    pval_cutoff: float,
    correction: str | None,
    n_features: int | None,
    clip: str | float | None,
    theta: float,
    spatial_key: str,
    chunk_size: int | None,
    what: str,
    gene_symbols: str | None = None,
    device: str | Any | None = None,
) -> _GraphResult:
    """Validate one dataset and compute its graph, without writing anything."""
    check_shape(adata, what=what)
    device = resolve_device(device)  # before the passes over the counts (a backed file may be large)
    X = get_matrix(adata, layer)
    check_counts(X, layer=layer)
    check_unique_var_names(adata, what=what)
    if not 0 < pval_cutoff <= 1:
        msg = f"`pval_cutoff` must be in (0, 1], got {pval_cutoff}."
        raise ValueError(msg)
    if correction not in (None, "fdr_bh"):
        msg = f"`correction` must be None or 'fdr_bh', got {correction!r}."
        raise ValueError(msg)
    if n_features is not None and n_features < 1:
        msg = f"`n_features` must be a positive integer or None (full profiles), got {n_features}."
        raise ValueError(msg)
    selection = DEFAULT_SELECTION[omics] if selection is None else selection
    if selection not in ("pearson_residuals", "sparkx", "moran"):
        msg = f"Unknown `selection` {selection!r}: use 'pearson_residuals', 'sparkx' or 'moran'."
        raise ValueError(msg)
    if selection in ("sparkx", "moran"):
        check_spatial(adata, spatial_key, what=what)

    depth = row_sums(X, chunk_size)
    keep = nonzero_cells(depth, what=what)
    rows = None if keep.all() else keep
    n_cells = int(keep.sum())
    if n_cells < 2:
        msg = f"The {what} has {n_cells} cell(s) with counts; at least 2 are needed to estimate co-expression."
        raise ValueError(msg)

    # gene totals over the cells used: the offsets of the analytic Pearson residuals
    gene_sums = np.zeros(adata.n_vars)
    for _, block in iter_row_chunks(X, chunk_size, rows=rows, dense=False):
        gene_sums += np.asarray(block.sum(axis=0, dtype=np.float64)).ravel()
    total = float(gene_sums.sum())

    rank = np.full(adata.n_vars, np.nan)
    score = np.full(adata.n_vars, np.nan)
    symbols, eligible = None, None
    if gene_symbols is not None:
        symbols, eligible = resolve_symbols(adata, gene_symbols, gene_sums, what=what)
    if genes is not None:
        cols = _resolve_genes(adata, genes, symbols, eligible)
        if eligible is not None and not eligible[cols].all():
            bad = adata.var_names[cols[~eligible[cols]]][:5].tolist()
            msg = (
                f"`genes` of the {what} include {bad}, which have no symbol in `var[{gene_symbols!r}]` or share "
                "their symbol with a more expressed ID; remove them or fix the symbols."
            )
            raise ValueError(msg)
        if symbols is not None and not pd.Index(symbols[cols]).is_unique:
            msg = f"`genes` of the {what} list several IDs with one symbol; pass each symbol once."
            raise ValueError(msg)
        rank[cols] = np.arange(len(cols))
        selection = "given"
    elif selection == "pearson_residuals":
        sel = select_highly_variable(
            X,
            n_top_genes=n_top_genes,
            theta=theta,
            depth=depth,
            gene_sums=gene_sums,
            total=total,
            rows=rows,
            chunk_size=chunk_size,
        )
        cols = np.sort(sel.indices)
        rank[:] = sel.ranks
        score[:] = sel.scores
        if eligible is not None:
            # the most variable genes among those with a (kept) symbol
            usable = np.flatnonzero(eligible & (gene_sums > 0))
            order = usable[np.argsort(-sel.scores[usable], kind="stable")][:n_top_genes]
            if len(order) < n_top_genes <= len(sel.indices):
                warnings.warn(
                    f"The {what} has {len(order)} expressed gene(s) with a symbol, fewer than "
                    f"n_top_genes={n_top_genes}: all of them are used.",
                    UserWarning,
                    stacklevel=3,
                )
            cols = np.sort(order)
            rank[:] = np.nan
            rank[order] = np.arange(len(order))
    else:
        table = rank_spatial_genes(adata, method=selection, layer=layer, spatial_key=spatial_key, rows=rows)
        ranked = table["rank"].to_numpy(dtype=float)
        if eligible is not None:
            # rank again among the genes with a (kept) symbol
            usable = np.flatnonzero(eligible & np.isfinite(ranked))
            order = usable[np.argsort(ranked[usable], kind="stable")]
            ranked = np.full(adata.n_vars, np.nan)
            ranked[order] = np.arange(len(order))
        cols = np.flatnonzero(np.isfinite(ranked) & (ranked < n_top_genes))
        if len(cols) < n_top_genes:
            warnings.warn(
                f"The {what} has {len(cols)} gene(s) that can be tested for spatial variation, fewer than "
                f"n_top_genes={n_top_genes}: all of them are used. Lower `n_top_genes` to silence this warning.",
                UserWarning,
                stacklevel=3,
            )
        rank[:] = ranked
        score[:] = table["score"].to_numpy(dtype=float)
    if len(cols) < 2:
        msg = f"The {what} has {len(cols)} usable gene(s); a co-expression graph needs at least 2."
        raise ValueError(msg)

    fit = cscore_irls(X, depth, cols=cols, rows=rows, chunk_size=chunk_size, device=device)
    pvals = adjust_pvalues(fit.pvalue, correction)
    adj_sub = pvals < pval_cutoff
    np.fill_diagonal(adj_sub, True)  # self-loops, as the reference graphs have
    p = len(cols)
    sub = sparse.coo_matrix(adj_sub)
    full_shape = (adata.n_vars, adata.n_vars)
    connectivities = sparse.csr_matrix(
        (np.ones(sub.nnz, dtype=np.float32), (cols[sub.row], cols[sub.col])), shape=full_shape
    )
    correlation = sparse.csr_matrix(
        (fit.correlation[sub.row, sub.col].astype(np.float32), (cols[sub.row], cols[sub.col])), shape=full_shape
    )

    feats = residual_features(
        X,
        cols,
        depth=depth,
        gene_sums=gene_sums,
        total=total,
        theta=theta,
        clip=_parse_clip(clip, n_cells),
        center=True,
        n_components=n_features,
        rows=rows,
        chunk_size=chunk_size,
    )
    features = np.zeros((adata.n_vars, feats.shape[1]), dtype=np.float32)
    features[cols] = feats

    n_edges = int(adj_sub.sum())
    info = {
        "omics": omics,
        "n_genes": p,
        "n_cells": n_cells,
        "n_edges": n_edges,
        "density": n_edges / p**2,
        "selection": selection,
        "cscore_converged": bool(fit.converged),
        "cscore_n_iter": int(fit.n_iter),
        "gene_symbols": gene_symbols,
    }
    return _GraphResult(cols, connectivities, correlation, features, rank, score, info)


def _store(adata: AnnData, result: _GraphResult, *, keys: _keys.GraphKeys, params: dict, tissue, species) -> None:
    mask = np.zeros(adata.n_vars, dtype=bool)
    mask[result.cols] = True
    adata.varp[keys.connectivities] = result.connectivities
    adata.varp[keys.correlation] = result.correlation
    adata.varm[keys.features] = result.features
    adata.var[keys.gene] = mask
    adata.var[keys.selection_rank] = result.rank
    adata.var[keys.selection_score] = result.score
    info = result.info
    adata.uns[keys.uns] = {
        "connectivities_key": keys.connectivities,
        "correlation_key": keys.correlation,
        "features_key": keys.features,
        "gene_key": keys.gene,
        "omics": info["omics"],
        "tissue": str(tissue),
        "species": str(species),
        "n_genes": info["n_genes"],
        "n_cells": info["n_cells"],
        "n_edges": info["n_edges"],
        "density": float(info["density"]),
        "cscore_converged": info["cscore_converged"],
        "params": {k: _uns_value(v) for k, v in {**params, "selection": info["selection"]}.items()},
    }
    if info.get("gene_symbols") is not None:
        adata.uns[keys.uns][SYMBOLS_ENTRY] = str(info["gene_symbols"])


#: Options of :func:`_compute_graph` recorded in ``uns[key_added]['params']``.
_PARAM_KEYS = (
    "n_top_genes",
    "layer",
    "pval_cutoff",
    "correction",
    "n_features",
    "clip",
    "theta",
    "spatial_key",
    "gene_symbols",
)


def _params(job: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters recorded in ``uns[key_added]['params']``, taken from a dataset's :func:`_compute_graph` options."""
    # The device is recorded but is not one of _PARAM_KEYS, which decide whether a stored graph matches the options
    # asked for (musegnn_sc.tl): it does not change the graph.
    return {**{k: job[k] for k in _PARAM_KEYS}, "method": "cscore", "device": device_label(job.get("device"))}


def _dataset_label(adata: AnnData, value: str | None, key: str) -> str:
    if value is not None:
        return str(value)
    return str(adata.uns.get(key, "unknown"))


@doc_params(
    adata=doc_adata_counts,
    n_top_genes=_doc_n_top_genes,
    gene_symbols=_doc_gene_symbols,
    shared_params=_doc_shared_params.format(chunk_size=doc_chunk_size, device=doc_device, key_added=doc_key_added),
    copy=doc_copy,
)
def build_coexpression_graph(
    adata: AnnData,
    *,
    omics: Omics | None = None,
    n_top_genes: int = 1000,
    layer: str | None = None,
    genes: Sequence[str] | np.ndarray | None = None,
    gene_symbols: str | None = None,
    selection: Selection | None = None,
    pval_cutoff: float = 0.005,
    correction: Literal["fdr_bh"] | None = None,
    n_features: int | None = 128,
    clip: Literal["sctransform", "pearson"] | float = "sctransform",
    theta: float = 100.0,
    spatial_key: str = _keys.SPATIAL,
    tissue: str | None = None,
    species: str | None = None,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
    device: str | Any | None = None,  # or a torch.device (torch is not imported at module level)
    key_added: str = _keys.COEXPRESSION,
    copy: bool = False,
) -> AnnData | None:
    r"""Build a depth-robust gene co-expression graph of one dataset (MuSe-GNN, section 3.2).

    Selects informative genes for the data type, estimates their co-expression with CS-CORE
    :cite:`su2023cscore` (which separates biological covariance from the Poisson measurement noise of cells with
    different sequencing depths), connects gene pairs whose co-expression is significant, and computes node
    features for the model. The result is stored like :func:`scanpy.pp.neighbors` stores a cell graph.

    Parameters
    ----------
    {adata}
    omics
        Data type: ``'rna'``, ``'atac'`` (gene activity, see :func:`~musegnn_sc.pp.gene_activity`) or
        ``'spatial'``. ``None`` reads ``adata.uns['omics']``, else guesses (gene activity output is ATAC, data with
        ``obsm[spatial_key]`` is spatial, anything else RNA).
    {n_top_genes}
    layer
        Layer holding raw integer counts; ``None`` uses ``adata.X``. Sequencing depth is the total count per cell
        over *all* genes of this matrix, as CS-CORE requires.
    genes
        Use these genes (names or boolean mask over ``var_names``; with ``gene_symbols``, symbols too) instead of
        selecting them.
    {gene_symbols}
    selection
        Gene selection method: ``'pearson_residuals'`` (RNA, ATAC), ``'sparkx'`` or ``'moran'`` (spatial, the latter
        with :func:`squidpy.gr.spatial_autocorr`). ``None`` picks the paper's method for the data type.
    {shared_params}
    tissue
        Tissue of the dataset, recorded for the model (default: ``adata.uns['tissue']`` or ``'unknown'``).
    species
        Species of the dataset, recorded for the model (default: ``adata.uns['species']`` or ``'unknown'``).
    {copy}

    Returns
    -------
    ``None``, or a copy of ``adata`` if ``copy=True``. Sets:

    ``adata.varp['{{key_added}}_connectivities']`` : :class:`scipy.sparse.csr_matrix`
        Binary adjacency (``n_vars x n_vars``) of the selected genes, self-loops included.
    ``adata.varp['{{key_added}}_correlation']`` : :class:`scipy.sparse.csr_matrix`
        CS-CORE correlation of each edge.
    ``adata.var['{{key_added}}_gene']`` : :class:`bool`
        The gene is a node of the graph.
    ``adata.var['{{key_added}}_rank']``, ``adata.var['{{key_added}}_score']`` : :class:`float`
        Selection rank (0 = best, NaN if not ranked) and score (Pearson residual variance, SPARK-X
        :math:`-\log_{{10}}` p-value or Moran's I).
    ``adata.varm['{{key_added}}_features']`` : :class:`numpy.ndarray`
        Node features (zero rows for genes outside the graph).
    ``adata.uns['{{key_added}}']`` : :class:`dict`
        The keys above, the dataset's ``omics``, ``tissue`` and ``species``, graph size and density, and ``params``.

    Examples
    --------
    >>> import musegnn_sc as msg
    >>> mdata = msg.datasets.toy_mudata()
    >>> adata = mdata.mod["rna_heart_1"]
    >>> msg.pp.build_coexpression_graph(adata, n_top_genes=200)
    >>> adata.varp["coexpression_connectivities"].shape == (adata.n_vars, adata.n_vars)
    True
    """
    t0 = logg.start("building co-expression graph")
    omics = resolve_omics(adata, omics, spatial_key=spatial_key)
    job = {
        "omics": omics,
        "n_top_genes": n_top_genes,
        "layer": layer,
        "genes": genes,
        "gene_symbols": gene_symbols,
        "selection": selection,
        "pval_cutoff": pval_cutoff,
        "correction": correction,
        "n_features": n_features,
        "clip": clip,
        "theta": theta,
        "spatial_key": spatial_key,
        "chunk_size": chunk_size,
        "device": device,
        "what": "dataset",
    }
    result = _compute_graph(adata, **job)
    adata = adata.copy() if copy else adata
    keys = _keys.GraphKeys(key_added)
    _store(
        adata,
        result,
        keys=keys,
        params=_params(job),
        tissue=_dataset_label(adata, tissue, _keys.TISSUE),
        species=_dataset_label(adata, species, _keys.SPECIES),
    )
    logg.finish(
        f"{result.info['n_genes']} genes, {result.info['n_edges']} edges (density {result.info['density']:.3f}); "
        f"added varp[{keys.connectivities!r}], varp[{keys.correlation!r}], varm[{keys.features!r}], "
        f"var[{keys.gene!r}], uns[{keys.uns!r}]",
        t0,
    )
    return adata if copy else None


def _per_mod(value, name: str, default=None):
    """A per-modality option: a mapping (looked up by modality name, ``default`` if absent) or one value for all."""
    if isinstance(value, Mapping):
        return value.get(name, default)
    return value


def _worker(adata: AnnData, kwargs: dict, n_threads: int) -> _GraphResult:
    """Run in a worker process with a bounded number of BLAS/numba threads, so workers do not oversubscribe."""
    from threadpoolctl import threadpool_limits

    try:
        import numba

        numba.set_num_threads(max(1, min(n_threads, numba.config.NUMBA_NUM_THREADS)))
    except ImportError:  # pragma: no cover - numba is a dependency of scanpy
        pass
    with threadpool_limits(limits=n_threads):
        return _compute_graph(adata, **kwargs)


@doc_params(
    n_top_genes=_doc_n_top_genes,
    gene_symbols=_doc_gene_symbols,
    shared_params=_doc_shared_params.format(chunk_size=doc_chunk_size, device=doc_device, key_added=doc_key_added),
    copy=doc_copy,
)
def build_coexpression_graphs(
    mdata: MuData,
    *,
    mods: Sequence[str] | None = None,
    omics: Mapping[str, Omics] | Omics | None = None,
    n_top_genes: Mapping[str, int] | int = 1000,
    layer: Mapping[str, str | None] | str | None = None,
    gene_symbols: Mapping[str, str | None] | str | None = None,
    selection: Mapping[str, Selection] | Selection | None = None,
    pval_cutoff: float = 0.005,
    correction: Literal["fdr_bh"] | None = None,
    n_features: int | None = 128,
    clip: Literal["sctransform", "pearson"] | float = "sctransform",
    theta: float = 100.0,
    spatial_key: str = _keys.SPATIAL,
    tissue: Mapping[str, str] | str | None = None,
    species: Mapping[str, str] | str | None = None,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
    device: str | Any | None = None,  # or a torch.device (torch is not imported at module level)
    n_jobs: int = 1,
    key_added: str = _keys.COEXPRESSION,
    copy: bool = False,
) -> MuData | None:
    """Build the co-expression graph of every dataset (modality) of a MuData of unpaired datasets.

    Each modality is one dataset (one tissue, technology and species), as in MuSe-GNN. Every dataset gets the
    gene selection of its data type (Pearson residuals for RNA and ATAC gene activity, SPARK-X for spatial data)
    and is processed as by :func:`~musegnn_sc.pp.build_coexpression_graph`. Either all datasets are written or, if
    one fails, none.

    Parameters
    ----------
    mdata
        MuData whose modalities hold raw counts, one dataset each.
    mods
        Modalities to process (default: all).
    omics
        Data type per modality (mapping) or for all. Unspecified modalities: ``uns['omics']``, else the modality
        name's prefix (``rna_…``, ``atac_…``, ``spatial_…``), else a guess as in
        :func:`~musegnn_sc.pp.build_coexpression_graph`.
    {n_top_genes}
        A mapping from modality name to number sets it per modality (1000 for modalities not listed).
    layer
        Layer with raw counts, per modality (mapping) or for all; ``None`` uses ``X``.
    {gene_symbols}
        Per modality (mapping; modalities not listed use ``var_names``) or one column for all.
    selection
        Gene selection method per modality (mapping) or for all; ``None`` picks the method of the data type.
    {shared_params}
    tissue
        Tissue per modality (mapping) or for all (default: each modality's ``uns['tissue']`` or ``'unknown'``).
    species
        Species per modality (mapping) or for all (default: each modality's ``uns['species']`` or ``'unknown'``).
    n_jobs
        Number of datasets processed in parallel (separate processes; BLAS threads are divided among them).
        ``-1`` uses every core. With a ``device``, every process uses that device.
    {copy}

    Returns
    -------
    ``None``, or a copy of ``mdata`` if ``copy=True``. Each processed modality gets the keys listed in
    :func:`~musegnn_sc.pp.build_coexpression_graph`; ``uns['{{key_added}}']`` records its ``omics``, ``tissue`` and
    ``species``, which :func:`~musegnn_sc.tl.train_musegnn` reads.

    Examples
    --------
    >>> import musegnn_sc as msg
    >>> mdata = msg.datasets.toy_mudata(include_mouse=False)
    >>> msg.pp.build_coexpression_graphs(mdata, n_top_genes=300, n_jobs=2)
    >>> mdata.mod["rna_heart_1"].uns["coexpression"]["n_edges"]
    """
    t0 = logg.start("building co-expression graphs")
    names = resolve_mods(mdata, mods)
    resolve_device(device)  # a device that cannot be used fails here, before any dataset is processed
    jobs: dict[str, dict] = {}
    for name in names:
        ad = mdata.mod[name]
        jobs[name] = {
            "omics": resolve_omics(ad, _per_mod(omics, name), name=name, spatial_key=spatial_key),
            "n_top_genes": _per_mod(n_top_genes, name, 1000),
            "layer": _per_mod(layer, name),
            "genes": None,
            "gene_symbols": _per_mod(gene_symbols, name),
            "selection": _per_mod(selection, name),
            "pval_cutoff": pval_cutoff,
            "correction": correction,
            "n_features": n_features,
            "clip": clip,
            "theta": theta,
            "spatial_key": spatial_key,
            "chunk_size": chunk_size,
            "device": device,
            "what": f"modality {name!r}",
        }

    n_cpu = os.cpu_count() or 1
    n_jobs = n_cpu if n_jobs in (-1, None) else max(1, int(n_jobs))
    n_jobs = min(n_jobs, len(names))
    if n_jobs == 1:
        results = {name: _compute_graph(mdata.mod[name], **kw) for name, kw in jobs.items()}
    else:
        from joblib import Parallel, delayed

        n_threads = max(1, n_cpu // n_jobs)
        out = Parallel(n_jobs=n_jobs, backend="loky")(
            delayed(_worker)(mdata.mod[name], kw, n_threads) for name, kw in jobs.items()
        )
        results = dict(zip(jobs, out, strict=True))

    mdata = mdata.copy() if copy else mdata
    keys = _keys.GraphKeys(key_added)
    for name, result in results.items():
        ad = mdata.mod[name]
        _store(
            ad,
            result,
            keys=keys,
            params=_params(jobs[name]),
            tissue=_dataset_label(ad, _per_mod(tissue, name), _keys.TISSUE),
            species=_dataset_label(ad, _per_mod(species, name), _keys.SPECIES),
        )
    logg.finish(
        "; ".join(
            f"{n}: {r.info['omics']}, {r.info['n_genes']} genes, density {r.info['density']:.3f}"
            for n, r in results.items()
        ),
        t0,
    )
    return mdata if copy else None
