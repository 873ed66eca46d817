"""Module-trait heatmap with significance stars (WGCNA's labeledHeatmap, hdWGCNA's PlotModuleTraitCorrelation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes

from musegnn_sc._docs import doc_ax_show_save, doc_params, doc_returns_axes

from ._utils import finish, get_ax


def stars(p: float) -> str:
    """``***`` below 0.001, ``**`` below 0.01, ``*`` below 0.05."""
    if not np.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


@doc_params(ax_show_save=doc_ax_show_save, returns_axes=doc_returns_axes)
def module_trait(
    data: AnnData | pd.DataFrame,
    *,
    key: str = "module_scores_traits",
    significance: str = "padj",
    annotate: bool = True,
    cmap: str = "RdBu_r",
    figsize: tuple[float, float] | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Heatmap of module-trait correlations, with stars for significant pairs.

    Modules are rows, trait columns (one per category of a categorical trait) are columns; the colour is the
    correlation (symmetric scale from -1 to 1) and each cell shows it with ``*`` (< 0.05), ``**`` (< 0.01) or
    ``***`` (< 0.001) of ``significance``.

    Parameters
    ----------
    data
        AnnData holding the result of :func:`musegnn_sc.tl.module_trait_correlation` in ``uns[key]``, or that table.
    key
        ``uns`` key of the result.
    significance
        Column giving the stars: ``"padj"`` (BH FDR) or ``"pvalue"``.
    annotate
        Write the correlation and stars in each cell.
    cmap
        Colour map.
    figsize
        Size of a new figure; from the table's shape if ``None``.
    {ax_show_save}

    {returns_axes}

    Examples
    --------
    >>> msg.tl.module_trait_correlation(adata, ["condition", "n_counts"])
    >>> msg.pl.module_trait(adata)
    """
    if isinstance(data, AnnData):
        if key not in data.uns or "table" not in data.uns[key]:
            msg = f"`adata.uns[{key!r}]` not found: run `msg.tl.module_trait_correlation(adata, traits)` first."
            raise KeyError(msg)
        table = data.uns[key]["table"]
    else:
        table = data
    missing = [c for c in ("module", "trait", "correlation", significance) if c not in table]
    if missing:
        msg = f"The table lacks column(s) {missing}: pass the result of `msg.tl.module_trait_correlation`."
        raise ValueError(msg)
    if table.empty:
        msg = "The module-trait table is empty: nothing to draw."
        raise ValueError(msg)
    modules = list(dict.fromkeys(table["module"].astype(str)))
    traits = list(dict.fromkeys(table["trait"].astype(str)))
    t = table.assign(module=table["module"].astype(str), trait=table["trait"].astype(str))
    r = t.pivot(index="module", columns="trait", values="correlation").reindex(index=modules, columns=traits)
    p = t.pivot(index="module", columns="trait", values=significance).reindex(index=modules, columns=traits)
    fig, ax = get_ax(ax, figsize or (1.0 + 0.9 * len(traits), 1.0 + 0.45 * len(modules)))
    im = ax.imshow(r.to_numpy(dtype=float), cmap=cmap, vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(traits)), traits, rotation=45, ha="right")
    ax.set_yticks(range(len(modules)), modules)
    ax.set_xlabel("trait")
    ax.set_ylabel("module")
    if annotate:
        for i in range(len(modules)):
            for j in range(len(traits)):
                v = r.iat[i, j]
                if np.isfinite(v):
                    ax.text(
                        j,
                        i,
                        f"{v:.2f}\n{stars(p.iat[i, j])}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if abs(v) > 0.6 else "black",
                    )
    fig.colorbar(im, ax=ax, label="correlation", shrink=0.8)
    return finish(fig, ax, show=show, save=save)
