"""Sankey diagram of two annotations of the genes (e.g. omics -> module, the paper's Figure 3d), matplotlib only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes

from musegnn_sc._docs import doc_ax_show_save, doc_params, doc_returns_axes

from ._utils import categories_of, category_colors, finish, get_ax

#: Horizontal extent of the node bars and of the ribbons (axes coordinates 0..1).
_BAR = 0.06


def _smoothstep(t: np.ndarray) -> np.ndarray:
    return t * t * (3 - 2 * t)


def sankey_layout(counts: pd.DataFrame, *, gap: float = 0.02) -> tuple[dict, dict, list]:
    """Node spans and ribbon ends of a two-column Sankey diagram (pure geometry, tested on its own).

    Parameters
    ----------
    counts
        Sources x targets table of counts.
    gap
        Vertical gap between nodes, as a fraction of the total height.

    Returns
    -------
    ``left`` and ``right``: ``{category: (bottom, top)}`` (total height 1 plus the gaps of the longer column); ``flows``: ``(source, target,
    (bottom, top) on the left, (bottom, top) on the right)`` for every non-zero cell. Each node's ribbons tile its
    span exactly, so a node's height is its total count.
    """
    total = float(counts.to_numpy().sum())
    if total <= 0:
        msg = "Nothing to draw: every count is zero."
        raise ValueError(msg)
    frac = counts / total

    height = 1.0 + gap * (max(counts.shape) - 1)

    def spans(sizes: pd.Series) -> dict:
        # centre the column with fewer nodes (fewer gaps) against the other
        out, top = {}, height - gap * (max(counts.shape) - len(sizes)) / 2
        for name, h in sizes.items():
            out[name] = (top - h, top)
            top -= h + gap
        return out

    left = spans(frac.sum(axis=1))
    right = spans(frac.sum(axis=0))
    flows = []
    left_cursor = {k: v[1] for k, v in left.items()}
    right_cursor = {k: v[1] for k, v in right.items()}
    # ribbons leave each source in target order and enter each target in source order: no crossing at the nodes
    for s in counts.index:
        for t in counts.columns:
            h = frac.loc[s, t]
            if h <= 0:
                continue
            lt, rt = left_cursor[s], right_cursor[t]
            flows.append((s, t, (lt - h, lt), (rt - h, rt)))
            left_cursor[s] -= h
            right_cursor[t] -= h
    return left, right, flows


@doc_params(ax_show_save=doc_ax_show_save, returns_axes=doc_returns_axes)
def sankey(
    gdata: AnnData,
    source: str = "omics",
    target: str = "leiden",
    *,
    gap: float = 0.02,
    alpha: float = 0.55,
    min_label_fraction: float = 0.01,
    figsize: tuple[float, float] = (5.0, 6.0),
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Sankey diagram of how genes of each ``source`` category spread over ``target`` categories.

    With ``source='omics'`` and ``target='leiden'`` it shows which modules are shared across modalities, as the
    paper's Figure 3d (drawn there with pySankey; here with matplotlib alone). Ribbons take the colour of their
    source category (``uns['<source>_colors']`` when present, as scanpy stores it).

    Parameters
    ----------
    gdata
        Gene-level AnnData (or any AnnData) with both columns in ``obs``.
    source
        ``obs`` column on the left.
    target
        ``obs`` column on the right.
    gap
        Vertical gap between categories, as a fraction of the total height.
    alpha
        Opacity of the ribbons.
    min_label_fraction
        Categories holding less than this fraction of the genes are not labelled (they stay drawn).
    figsize
        Size of a new figure (when ``ax`` is ``None``).
    {ax_show_save}

    {returns_axes}

    Examples
    --------
    >>> msg.pl.sankey(gdata, source="omics", target="leiden")
    """
    from matplotlib.patches import Rectangle

    for key in (source, target):
        if key not in gdata.obs:
            msg = f"`gdata.obs[{key!r}]` not found. Run `msg.tl.gene_modules(gdata)` for modules, or pass a column."
            raise KeyError(msg)
    src = gdata.obs[source]
    tgt = gdata.obs[target]
    src_cats, tgt_cats = categories_of(src), categories_of(tgt)
    counts = pd.crosstab(src.astype(str), tgt.astype(str)).reindex(index=src_cats, columns=tgt_cats, fill_value=0)
    left, right, flows = sankey_layout(counts, gap=gap)
    colors = category_colors(gdata.uns, source, src_cats)
    tgt_colors = category_colors(gdata.uns, target, tgt_cats)

    fig, ax = get_ax(ax, figsize)
    x = np.linspace(_BAR, 1 - _BAR, 60)
    t = _smoothstep((x - _BAR) / (1 - 2 * _BAR))
    for s, _, (lb, lt), (rb, rt) in flows:
        lower = lb + (rb - lb) * t
        upper = lt + (rt - lt) * t
        ax.fill_between(x, lower, upper, color=colors[s], alpha=alpha, linewidth=0)
    for spans, x0, cols, ha, xt in ((left, 0.0, colors, "right", -0.01), (right, 1 - _BAR, tgt_colors, "left", 1.01)):
        for name, (b, tp) in spans.items():
            ax.add_patch(Rectangle((x0, b), _BAR, tp - b, facecolor=cols[name], edgecolor="none"))
            if tp - b >= min_label_fraction:
                ax.text(xt, (b + tp) / 2, name, ha=ha, va="center", fontsize=8)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.01, 1.0 + gap * (max(len(left), len(right)) - 1) + 0.01)
    ax.set_axis_off()
    ax.set_title(f"{source} \u2192 {target}")
    return finish(fig, ax, show=show, save=save)
