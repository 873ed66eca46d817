"""UMAP (or any 2-D basis) of the gene embeddings, coloured by an annotation, with genes of interest highlighted."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes

from musegnn_sc._docs import doc_params, doc_show_save

from ._utils import finish

#: Highlighted rows are labelled only up to this many (beyond it, labels hide the picture).
MAX_LABELS = 30


@doc_params(show_save=doc_show_save)
def embedding(
    gdata: AnnData,
    color: str | Sequence[str] | None = None,
    *,
    basis: str = "umap",
    highlight: Sequence[str] | np.ndarray | None = None,
    gene_key: str = "gene",
    highlight_color: str = "red",
    labels: bool | None = None,
    size: float | None = None,
    title: str | Sequence[str] | None = None,
    palette: str | Sequence[str] | None = None,
    cmap: str | None = None,
    legend_loc: str = "right margin",
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | list[Axes] | None:
    """Scatter plot of the genes in a 2-D embedding, as the paper's Figures 1b, 3a-c and 4a-c.

    Categories take scanpy's colours (``uns['<color>_colors']`` when set, as ``sc.pl.umap`` leaves them; nothing is
    written to ``gdata``). Highlighted genes are circled on top.

    Parameters
    ----------
    gdata
        Gene-level AnnData with ``obsm['X_<basis>']`` (:func:`musegnn_sc.tl.gene_modules` computes the UMAP).
    color
        ``obs`` column(s) to colour by: ``'dataset'``, ``'omics'``, ``'tissue'``, ``'species'``, ``'leiden'``, a
        condition... Several give one panel each. ``None`` draws all genes in grey.
    basis
        Embedding to draw (``obsm['X_<basis>']``).
    highlight
        Genes to circle: symbols (matched to ``obs[gene_key]``, every dataset's copy is circled) or a boolean mask
        over the rows (e.g. only the condition rows of differentially co-expressed genes).
    gene_key
        ``obs`` column of gene symbols.
    highlight_color
        Edge colour of the circles.
    labels
        Write the symbols next to the highlighted genes; by default when at most 30 rows are highlighted.
    size
        Point size; scanpy's default (``120000 / n_obs``, at most 60) if ``None``.
    title
        Panel title(s).
    palette
        Colours of the categories (a list, cycled); ``uns['<color>_colors']`` or scanpy's default palette if ``None``.
    cmap
        Colour map of continuous annotations.
    legend_loc
        Legend of categories: ``'right margin'``, ``'on data'`` (labels at the category medians) or ``'none'``.
    ax
        Axes to draw in (one colour only); a new figure if ``None``.
    {show_save}

    Returns
    -------
    The Axes (a list of Axes for several colours) if ``show`` is false, else ``None``.

    Examples
    --------
    >>> msg.pl.embedding(gdata, color="omics")
    >>> msg.pl.embedding(gdata, color="leiden", highlight=["ISG15", "IFI6", "MX1"])
    """
    import matplotlib.pyplot as plt

    key = f"X_{basis}"
    if key not in gdata.obsm:
        hint = "Run `msg.tl.gene_modules(gdata)` first." if basis == "umap" else f"Compute `obsm[{key!r}]` first."
        msg = f"`gdata.obsm[{key!r}]` not found. {hint}"
        raise KeyError(msg)
    colors = [color] if isinstance(color, str) or color is None else list(color)
    for c in colors:
        if c is not None and c not in gdata.obs:
            msg = f"`gdata.obs[{c!r}]` not found: colour by an obs column (dataset, omics, tissue, species, leiden...)."
            raise KeyError(msg)
    if ax is not None and len(colors) > 1:
        msg = "`ax` holds one panel: pass a single `color` with `ax`, or leave `ax=None` for a grid."
        raise ValueError(msg)
    titles = [title] * len(colors) if title is None or isinstance(title, str) else list(title)
    if len(titles) != len(colors):
        msg = f"Got {len(titles)} title(s) for {len(colors)} colour(s)."
        raise ValueError(msg)
    mask = _highlight_mask(gdata, highlight, gene_key)
    if labels is None:
        labels = 0 < mask.sum() <= MAX_LABELS
    coords = np.asarray(gdata.obsm[key])[:, :2]
    point = size if size is not None else min(120000 / max(gdata.n_obs, 1), 60.0)
    if ax is None:
        n = len(colors)
        ncols = min(n, 3)
        nrows = int(np.ceil(n / ncols))
        fig, grid = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 4.2 * nrows), squeeze=False, layout="constrained")
        axes = list(grid.ravel())
        for extra in axes[n:]:
            extra.set_axis_off()
        axes = axes[:n]
    else:
        fig, axes = ax.figure, [ax]
    # draw in a fixed random order so that no dataset or module systematically covers the others
    order = np.random.default_rng(0).permutation(gdata.n_obs)
    for a, c, t in zip(axes, colors, titles, strict=True):
        _scatter(a, gdata, coords, order, c, point, palette, cmap, legend_loc)
        if mask.any():
            a.scatter(
                coords[mask, 0],
                coords[mask, 1],
                s=max(point * 3, 20),
                facecolors="none",
                edgecolors=highlight_color,
                linewidths=1.2,
                zorder=5,
            )
            if labels and gene_key in gdata.obs:
                names = gdata.obs[gene_key].astype(str).to_numpy()[mask]
                for (x, y), name in zip(coords[mask], names, strict=True):
                    a.annotate(name, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=7, zorder=6)
        a.set_title(t if t is not None else (c or ""))
        a.set_xlabel(f"{basis.upper()}1")
        a.set_ylabel(f"{basis.upper()}2")
        a.set_xticks([])
        a.set_yticks([])
    out = axes[0] if len(axes) == 1 else axes
    return finish(fig, out, show=show, save=save)


def _scatter(ax, gdata, coords, order, color, point, palette, cmap, legend_loc) -> None:
    from ._utils import categories_of, category_colors

    if color is None:
        ax.scatter(coords[order, 0], coords[order, 1], s=point, c="lightgray", linewidths=0)
        return
    values = gdata.obs[color]
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if numeric:
        sc = ax.scatter(
            coords[order, 0], coords[order, 1], s=point, c=values.to_numpy(float)[order], cmap=cmap, linewidths=0
        )
        ax.figure.colorbar(sc, ax=ax, shrink=0.7)
        return
    cats = categories_of(values)
    if palette is not None:
        pal = [palette] if isinstance(palette, str) else list(palette)
        lut = {c: pal[i % len(pal)] for i, c in enumerate(cats)}
    else:
        lut = category_colors(gdata.uns, color, cats)
    vals = values.astype(str).to_numpy()
    rgba = np.array([lut.get(v, "lightgray") for v in vals[order]], dtype=object)
    ax.scatter(coords[order, 0], coords[order, 1], s=point, c=list(rgba), linewidths=0)
    if legend_loc == "on data":
        for cat in cats:
            sel = vals == cat
            x, y = np.median(coords[sel], axis=0)
            ax.text(x, y, cat, ha="center", va="center", fontsize=8, fontweight="bold")
    elif legend_loc != "none":
        handles = [ax.scatter([], [], s=30, c=lut[cat], label=cat) for cat in cats]
        ax.legend(
            handles=handles,
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            frameon=False,
            fontsize=8,
            ncol=1 if len(cats) <= 14 else 2,
            markerscale=1.0,
        )


def _highlight_mask(gdata: AnnData, highlight, gene_key: str) -> np.ndarray:
    if highlight is None:
        return np.zeros(gdata.n_obs, dtype=bool)
    arr = np.asarray(highlight)
    if arr.dtype == bool:
        if arr.shape != (gdata.n_obs,):
            msg = f"A boolean `highlight` needs one value per row of gdata ({gdata.n_obs}), got shape {arr.shape}."
            raise ValueError(msg)
        return arr
    if gene_key not in gdata.obs:
        msg = f"`gdata.obs[{gene_key!r}]` not found: pass `gene_key=` with the column of gene symbols."
        raise KeyError(msg)
    genes = gdata.obs[gene_key].astype(str)
    wanted = {str(g) for g in arr.ravel()}
    mask = genes.isin(wanted).to_numpy()
    if not mask.any():
        msg = f"None of the highlighted genes ({sorted(wanted)[:5]}...) is in `gdata.obs[{gene_key!r}]`."
        raise ValueError(msg)
    return mask
