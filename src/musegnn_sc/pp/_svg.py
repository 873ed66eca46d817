"""Spatially variable genes: SPARK-X on raw counts (the paper's choice) or squidpy's Moran's I."""

from __future__ import annotations

import logging
import warnings
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from musegnn_sc._chunks import row_sums
from musegnn_sc._logging import finish, start
from musegnn_sc._validate import (
    check_counts,
    check_shape,
    check_spatial,
    check_unique_var_names,
    get_matrix,
    nonzero_cells,
)
from musegnn_sc.pp._sparkx import sparkx_test

_METHODS = ("sparkx", "moran")


def _check_method(method: str) -> None:
    if method not in _METHODS:
        msg = f"`method` must be 'sparkx' (SPARK-X on raw counts) or 'moran' (squidpy's Moran's I), got {method!r}."
        raise ValueError(msg)


def _moran(X, coords: np.ndarray, obs_names: pd.Index, var_names: pd.Index, *, n_neighs: int) -> pd.DataFrame:
    """Moran's I of the log-normalised counts on a k-nearest-neighbour spatial graph, via squidpy."""
    with warnings.catch_warnings():
        # squidpy's import emits docstring SyntaxWarnings and deprecation notices of its dependencies.
        warnings.simplefilter("ignore")
        import scanpy as sc
        import squidpy as sq

    X = sparse.csr_matrix(X, dtype=np.float64) if sparse.issparse(X) else sparse.csr_matrix(np.asarray(X, np.float64))
    expressed = np.asarray(X.sum(axis=0)).ravel() > 0
    # A temporary object: the user's AnnData is never touched.
    tmp = AnnData(
        X=X[:, expressed],
        obs=pd.DataFrame(index=obs_names.astype(str)),
        var=pd.DataFrame(index=var_names[expressed].astype(str)),
        obsm={"spatial": coords},
    )
    sc.pp.normalize_total(tmp)
    sc.pp.log1p(tmp)
    # squidpy logs the graph construction of this internal object at INFO level through spatialdata's logger.
    sd_logger = logging.getLogger("spatialdata._logging")
    level = sd_logger.level
    sd_logger.setLevel(logging.WARNING)
    try:
        knn = getattr(sq.gr, "spatial_neighbors_knn", None)
        if knn is not None:
            knn(tmp, spatial_key="spatial", n_neighs=n_neighs)
        else:
            sq.gr.spatial_neighbors(tmp, spatial_key="spatial", coord_type="generic", n_neighs=n_neighs)
        res = sq.gr.spatial_autocorr(
            tmp, mode="moran", genes=list(tmp.var_names), n_perms=None, copy=True, n_jobs=1, show_progress_bar=False
        )
    finally:
        sd_logger.setLevel(level)
    res = res.reindex(tmp.var_names)

    out = pd.DataFrame(
        {"score": np.nan, "pval": 1.0, "padj": 1.0, "tested": False}, index=pd.RangeIndex(len(var_names))
    )
    idx = np.flatnonzero(expressed)
    stat = res["I"].to_numpy(dtype=np.float64)
    ok = np.isfinite(stat)
    out.loc[idx, "score"] = stat
    out.loc[idx[ok], "pval"] = res["pval_norm"].to_numpy(dtype=np.float64)[ok]
    out.loc[idx[ok], "padj"] = res["pval_norm_fdr_bh"].to_numpy(dtype=np.float64)[ok]
    out.loc[idx[ok], "tested"] = True
    return out


def rank_spatial_genes(
    adata: AnnData,
    *,
    method: Literal["sparkx", "moran"] = "sparkx",
    layer: str | None = None,
    spatial_key: str = "spatial",
    rows: np.ndarray | None = None,
    n_neighs: int = 6,
    chunk_size: int | None = None,
) -> pd.DataFrame:
    """Score every gene for spatial variation, without modifying ``adata``.

    Parameters
    ----------
    adata
        Spatial dataset with raw counts and coordinates in ``obsm[spatial_key]``.
    method
        ``"sparkx"``: SPARK-X on raw counts (eleven kernels, ACAT, Benjamini-Yekutieli), as MuSe-GNN;
        ``"moran"``: squidpy's Moran's I of log-normalised counts on a ``n_neighs``-nearest-neighbour graph
        (p-values from the normal approximation, Benjamini-Hochberg).
    layer
        Layer holding raw integer counts; ``None`` uses ``adata.X``.
    spatial_key
        Key of the coordinates in ``adata.obsm``.
    rows
        Boolean mask of the locations to use. When given, the caller has already dealt with locations without
        counts (no warning about them); locations outside the mask are ignored.
    n_neighs
        Neighbours per location in Moran's spatial graph.
    chunk_size
        Locations processed at a time by SPARK-X; ``None`` picks blocks of about four million values.

    Returns
    -------
    Indexed by ``adata.var_names``, with columns ``score`` (``-log10`` SPARK-X p-value or Moran's I), ``pval``,
    ``padj`` and ``rank`` (0 = most spatially variable; NaN for genes that cannot be tested: no counts, or constant).
    """
    _check_method(method)
    check_shape(adata, what="spatial dataset", purpose="test genes for spatial variation")
    check_unique_var_names(adata, what="spatial dataset")
    X = get_matrix(adata, layer)
    check_counts(X, layer=layer)
    coords = check_spatial(adata, spatial_key)
    if rows is None:
        rows = nonzero_cells(row_sums(X), what="spatial dataset")
    else:
        rows = np.asarray(rows, dtype=bool)
        if rows.shape != (adata.n_obs,):
            msg = f"`rows` must be a boolean mask with one entry per cell ({adata.n_obs}), got shape {rows.shape}."
            raise ValueError(msg)

    if method == "sparkx":
        res = sparkx_test(X, coords, rows=rows, chunk_size=chunk_size)
    else:
        take = np.flatnonzero(rows & (row_sums(X) > 0))
        if len(take) < 3:
            msg = f"Moran's I needs at least 3 locations with counts, got {len(take)}."
            raise ValueError(msg)
        res = _moran(X[take], coords[take], adata.obs_names[take], adata.var_names, n_neighs=n_neighs)

    tested = res["tested"].to_numpy(dtype=bool)
    pval = res["pval"].to_numpy(dtype=np.float64)
    # Ties in the score (e.g. identical genes) go to the smaller p-value, then to the earlier gene.
    order = np.lexsort((np.arange(len(tested)), pval, -res["score"].to_numpy(dtype=np.float64)))
    order = order[tested[order]]
    rank = np.full(len(tested), np.nan)
    rank[order] = np.arange(len(order), dtype=np.float64)
    return pd.DataFrame(
        {"score": res["score"].to_numpy(), "pval": pval, "padj": res["padj"].to_numpy(), "rank": rank},
        index=adata.var_names.copy(),
    )


def spatially_variable_genes(
    adata: AnnData,
    *,
    method: Literal["sparkx", "moran"] = "sparkx",
    n_top_genes: int = 1000,
    layer: str | None = None,
    spatial_key: str = "spatial",
    n_neighs: int = 6,
    key_added: str = "spatially_variable",
    copy: bool = False,
) -> AnnData | None:
    """Find spatially variable genes with SPARK-X (default) or Moran's I.

    SPARK-X (Zhu, Sun & Zhou 2021) tests each gene's raw counts against eleven spatial kernels and combines them with the
    Cauchy combination; genes are ranked by their combined p-value, whose Benjamini-Yekutieli adjustment is reported.
    MuSe-GNN builds the graphs of spatial datasets on the top 1000 SPARK-X genes. ``method="moran"`` ranks genes by
    Moran's I instead (:func:`squidpy.gr.spatial_autocorr` on log-normalised counts and a k-nearest-neighbour graph
    of the locations), computed on a temporary object.

    Parameters
    ----------
    adata
        Spatial dataset of shape ``n_obs`` x ``n_vars`` (locations x genes) with raw counts and coordinates in
        ``obsm[spatial_key]``.
    method
        ``"sparkx"`` or ``"moran"``.
    n_top_genes
        Number of genes flagged as spatially variable (fewer, with a warning, if fewer genes can be tested).
    layer
        Layer holding raw integer counts; ``None`` uses ``adata.X``.
    spatial_key
        Key of the coordinates in ``adata.obsm``.
    n_neighs
        Neighbours per location in the spatial graph of ``method="moran"``.
    key_added
        Name of the boolean column written to ``adata.var``, and prefix of the others.
    copy
        Return a copy instead of writing to ``adata``.

    Returns
    -------
    Returns ``None``, or a copy of ``adata`` if ``copy=True``, with these fields set:

    ``adata.var[key_added]`` : :class:`bool`
        The ``n_top_genes`` most spatially variable genes.
    ``adata.var[f"{key_added}_score"]`` : :class:`float`
        ``-log10`` of the SPARK-X p-value, or Moran's I.
    ``adata.var[f"{key_added}_pval"]``, ``adata.var[f"{key_added}_padj"]`` : :class:`float`
        p-value and adjusted p-value (Benjamini-Yekutieli for SPARK-X, Benjamini-Hochberg for Moran's I).
    ``adata.var[f"{key_added}_rank"]`` : :class:`float`
        0 for the most spatially variable gene; NaN for genes that could not be tested (no counts, or constant).
    ``adata.uns[key_added]`` : :class:`dict`
        ``params`` of the call.

    Examples
    --------
    >>> import musegnn_sc as msg
    >>> msg.pp.spatially_variable_genes(adata, n_top_genes=1000)  # doctest: +SKIP
    >>> adata.var_names[adata.var["spatially_variable"]]  # doctest: +SKIP
    """
    _check_method(method)
    if isinstance(n_top_genes, bool) or not isinstance(n_top_genes, int | np.integer) or n_top_genes < 1:
        msg = f"`n_top_genes` must be a positive integer, got {n_top_genes!r}."
        raise ValueError(msg)
    t0 = start(f"ranking spatially variable genes with {method}")
    res = rank_spatial_genes(adata, method=method, layer=layer, spatial_key=spatial_key, n_neighs=n_neighs)
    n_tested = int(res["rank"].notna().sum())
    if n_tested < n_top_genes:
        warnings.warn(
            f"Only {n_tested} gene(s) can be tested for spatial variation (the others have no counts or constant "
            f"counts), fewer than `n_top_genes={n_top_genes}`: all {n_tested} are flagged. Pass "
            f"`n_top_genes={n_tested}` or less to silence this warning.",
            UserWarning,
            stacklevel=2,
        )

    if copy:
        adata = adata.copy()
    adata.var[key_added] = (res["rank"] < n_top_genes).to_numpy()
    adata.var[f"{key_added}_score"] = res["score"].to_numpy()
    adata.var[f"{key_added}_pval"] = res["pval"].to_numpy()
    adata.var[f"{key_added}_padj"] = res["padj"].to_numpy()
    adata.var[f"{key_added}_rank"] = res["rank"].to_numpy()
    params = {"method": method, "n_top_genes": int(n_top_genes), "spatial_key": spatial_key}
    if layer is not None:
        params["layer"] = layer
    if method == "moran":
        params["n_neighs"] = int(n_neighs)
    adata.uns[key_added] = {"params": params}
    finish(f"added `.var[{key_added!r}]` and `.var[{key_added!r} + '_score' / '_pval' / '_padj' / '_rank']`", t0)
    return adata if copy else None
