"""Maps of module scores over the tissue, drawn with squidpy."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anndata import AnnData

from musegnn_sc._docs import doc_params, doc_show_save
from musegnn_sc._keys import SPATIAL


@doc_params(show_save=doc_show_save)
def spatial_modules(
    adata: AnnData,
    *,
    scores_key: str = "module_scores",
    modules: Sequence[str] | None = None,
    n: int | None = 6,
    moran_key: str | None = None,
    spatial_key: str = SPATIAL,
    cmap: str = "viridis",
    show: bool | None = None,
    save: str | Path | None = None,
    **kwargs: Any,
) -> list | None:
    """Maps of module scores on the spots, titled with their Moran's I, by :func:`squidpy.pl.spatial_scatter`.

    Parameters
    ----------
    adata
        AnnData of spots with coordinates and module scores (:func:`musegnn_sc.tl.score_modules`).
    scores_key
        ``obsm`` key of the scores.
    modules
        Modules to draw; by default the ``n`` of highest Moran's I (:func:`musegnn_sc.tl.spatial_modules`), or the
        first ``n`` when it was not run.
    n
        Number of modules drawn when ``modules`` is not given (``None``: all).
    moran_key
        ``uns`` key of the Moran's I table (default ``f"{{scores_key}}_moranI"``).
    spatial_key
        ``obsm`` key of the coordinates.
    cmap
        Colour map of the scores.
    {show_save}
    **kwargs
        Passed to :func:`squidpy.pl.spatial_scatter` (``ncols``, ``size``, ``img``, ``library_id``, ...). Without
        an image in ``uns['spatial']``, spots are drawn as points (``shape=None``).

    Returns
    -------
    The Axes (one per module) if ``show`` is false, else ``None``.

    Examples
    --------
    >>> msg.tl.score_modules(visium, gdata)
    >>> msg.tl.spatial_modules(visium)
    >>> msg.pl.spatial_modules(visium, n=4)
    """
    import matplotlib.pyplot as plt

    from musegnn_sc.tl._module_traits import get_scores
    from musegnn_sc.tl._spatial_modules import import_squidpy, quiet_spatialdata, scores_anndata

    sq = import_squidpy()
    scores = get_scores(adata, scores_key)
    if spatial_key not in adata.obsm:
        msg = f"`adata.obsm[{spatial_key!r}]` not found: spatial maps need spot coordinates."
        raise KeyError(msg)
    moran_key = moran_key or f"{scores_key}_moranI"
    moran = adata.uns.get(moran_key, {}).get("table")
    if modules is None:
        order = list(moran.index) if moran is not None else list(scores.columns.astype(str))
        modules = order if n is None else order[:n]
    modules = [str(m) for m in modules]
    unknown = [m for m in modules if m not in set(scores.columns.astype(str))]
    if unknown:
        msg = f"Module(s) {', '.join(map(repr, unknown))} not in `adata.obsm[{scores_key!r}]`."
        raise KeyError(msg)
    scores.columns = scores.columns.astype(str)
    tmp = scores_anndata(adata, scores, spatial_key)
    titles = [
        f"{m} (Moran's I = {moran.loc[m, 'I']:.2f})" if moran is not None and m in moran.index else m for m in modules
    ]
    if "spatial" not in adata.uns:
        kwargs.setdefault("shape", None)
    kwargs.setdefault("ncols", min(3, len(modules)))
    with quiet_spatialdata(), warnings.catch_warnings():
        # squidpy's own use of matplotlib's Colormap.set_bad (pending deprecation), nothing the user can change
        warnings.filterwarnings("ignore", message="The set_bad function", category=PendingDeprecationWarning)
        sq.pl.spatial_scatter(
            tmp, color=modules, title=titles, spatial_key=spatial_key, cmap=cmap, return_ax=True, **kwargs
        )
    fig = plt.gcf()
    axes = [a for a in fig.axes if a.get_label() != "<colorbar>"]
    if save is not None:
        fig.savefig(save, bbox_inches="tight", dpi=150)
    if show is None:
        from scanpy import settings

        show = settings.autoshow
    if show:
        plt.show()
        return None
    return axes
