"""Spatial autocorrelation (Moran's I) of module scores, with squidpy."""

from __future__ import annotations

import contextlib
import logging
import warnings

import numpy as np
import pandas as pd
from anndata import AnnData

from musegnn_sc import _logging
from musegnn_sc._keys import SPATIAL
from musegnn_sc.tl._module_traits import get_scores
from musegnn_sc.tl._score_modules import SCORES_KEY


def import_squidpy():
    """squidpy, imported without its import-time docstring SyntaxWarnings and dependency deprecation notices."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import squidpy as sq
    return sq


@contextlib.contextmanager
def quiet_spatialdata():
    """Silence the INFO log squidpy writes through spatialdata's logger when it builds a graph."""
    sd_logger = logging.getLogger("spatialdata._logging")
    level = sd_logger.level
    sd_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        sd_logger.setLevel(level)


def scores_anndata(adata: AnnData, scores: pd.DataFrame, spatial_key: str) -> AnnData:
    """A temporary AnnData: scores in ``X``, the coordinates, image metadata and spatial graph of ``adata``."""
    tmp = AnnData(
        X=scores.to_numpy(dtype=np.float64),
        obs=pd.DataFrame(index=adata.obs_names.copy()),
        var=pd.DataFrame(index=scores.columns.astype(str)),
    )
    tmp.obsm[spatial_key] = np.asarray(adata.obsm[spatial_key])
    if "spatial" in adata.uns:
        tmp.uns["spatial"] = adata.uns["spatial"]
    return tmp


def spatial_modules(
    adata: AnnData,
    *,
    scores_key: str = SCORES_KEY,
    spatial_key: str = SPATIAL,
    connectivity_key: str = "spatial_connectivities",
    n_neighs: int = 6,
    coord_type: str | None = None,
    n_perms: int | None = None,
    seed: int = 0,
    key_added: str | None = None,
) -> pd.DataFrame:
    """Moran's I of every module score over the tissue: which modules are spatially organised.

    Runs :func:`squidpy.gr.spatial_autocorr` (``mode="moran"``) on the module scores of
    :func:`~musegnn_sc.tl.score_modules`, through a temporary AnnData of the scores, on the spatial graph
    ``obsp[connectivity_key]`` of ``adata``; when it is missing, :func:`squidpy.gr.spatial_neighbors` builds one
    from ``obsm[spatial_key]`` (``n_neighs`` neighbours, hexagonal rings for Visium with ``uns['spatial']``) for this
    computation only, without writing it to ``adata``.

    Parameters
    ----------
    adata
        AnnData of spots or cells with coordinates in ``obsm[spatial_key]`` and module scores.
    scores_key
        ``obsm`` key of the scores.
    spatial_key
        ``obsm`` key of the coordinates.
    connectivity_key
        ``obsp`` key of an existing spatial graph.
    n_neighs
        Neighbours per spot when the graph is built (squidpy's ``n_neighs``).
    coord_type
        Graph of a missing ``obsp[connectivity_key]``: ``"grid"`` (hexagonal rings of a Visium array,
        :func:`squidpy.gr.spatial_neighbors_grid`) or ``"generic"`` (``n_neighs`` nearest neighbours,
        :func:`squidpy.gr.spatial_neighbors_knn`); ``None``: ``"grid"`` when ``uns['spatial']`` (Visium metadata)
        is present, else ``"generic"``.
    n_perms
        Permutations for squidpy's permutation p-value (``None``: analytic p-values only).
    seed
        Seed of the permutations.
    key_added
        ``uns`` key of the result (default ``f"{scores_key}_moranI"``).

    Returns
    -------
    DataFrame indexed by module, sorted by decreasing Moran's I, with squidpy's columns (``I``, ``pval_norm``,
    ``var_norm``, ``pval_norm_fdr_bh``, and permutation columns with ``n_perms``); also stored as
    ``uns[key_added]['table']`` with ``params``. :func:`musegnn_sc.pl.spatial_modules` draws the maps.

    Examples
    --------
    >>> import musegnn_sc as msg
    >>> msg.tl.score_modules(visium, gdata)
    >>> msg.tl.spatial_modules(visium).head()
    >>> msg.pl.spatial_modules(visium)
    """
    sq = import_squidpy()
    scores = get_scores(adata, scores_key)
    if spatial_key not in adata.obsm:
        avail = ", ".join(repr(k) for k in adata.obsm) or "none"
        msg = (
            f"`adata.obsm[{spatial_key!r}]` not found (obsm keys: {avail}): spatial modules need spot coordinates. "
            "Name them with `spatial_key=`."
        )
        raise KeyError(msg)
    if scores.isna().any().any():
        msg = f"`adata.obsm[{scores_key!r}]` has missing scores; Moran's I needs a score on every spot."
        raise ValueError(msg)
    tmp = scores_anndata(adata, scores, spatial_key)
    built = connectivity_key not in adata.obsp
    if built:
        kind = coord_type or ("grid" if "spatial" in adata.uns else "generic")
        if kind not in ("grid", "generic"):
            msg = f"`coord_type` must be 'grid', 'generic' or None, got {coord_type!r}."
            raise ValueError(msg)
        builder = getattr(sq.gr, "spatial_neighbors_grid" if kind == "grid" else "spatial_neighbors_knn", None)
        with quiet_spatialdata():
            if builder is not None:  # squidpy >= 1.8.2
                builder(tmp, spatial_key=spatial_key, n_neighs=n_neighs)
            else:
                sq.gr.spatial_neighbors(tmp, spatial_key=spatial_key, coord_type=kind, n_neighs=n_neighs)
        conn = "spatial_connectivities"
    else:
        tmp.obsp[connectivity_key] = adata.obsp[connectivity_key]
        conn = connectivity_key
    t0 = _logging.start(f"Moran's I of {scores.shape[1]} module scores on {adata.n_obs} spots")
    sq.gr.spatial_autocorr(
        tmp,
        connectivity_key=conn,
        mode="moran",
        n_perms=n_perms,
        seed=seed,
        n_jobs=1,
        show_progress_bar=False,
    )
    table = tmp.uns["moranI"].copy()
    table.index = table.index.astype(str)
    table.index.name = "module"
    key = key_added or f"{scores_key}_moranI"
    params = {"scores_key": scores_key, "spatial_key": spatial_key, "graph_built": built, "seed": int(seed)}
    if n_perms is not None:  # h5ad stores no None
        params["n_perms"] = int(n_perms)
    if built:
        params["n_neighs"] = n_neighs
        if coord_type is not None:
            params["coord_type"] = coord_type
    else:
        params["connectivity_key"] = connectivity_key
    adata.uns[key] = {"params": params, "table": table}
    _logging.finish(f"Moran's I in uns[{key!r}]", t0)
    return table
