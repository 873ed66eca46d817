"""Bubble plot of enriched gene sets per module (the paper's Figures 3e and 4d)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from musegnn_sc._docs import doc_ax_show_save, doc_params, doc_returns_axes

from ._utils import finish, get_ax

_REQUIRED = ("module", "term", "gene_ratio", "fdr", "n_overlap")


def _shorten(term: str, n: int) -> str:
    return term if len(term) <= n else term[: n - 1] + "\u2026"


def top_terms(
    results: pd.DataFrame, *, n_top: int = 5, groups: Sequence[str] | None = None, fdr_cutoff: float | None = None
) -> pd.DataFrame:
    """The ``n_top`` terms of lowest p-value per module, optionally only those with ``fdr <= fdr_cutoff``."""
    res = results
    if groups is not None:
        res = res[res["module"].astype(str).isin([str(g) for g in groups])]
    if fdr_cutoff is not None:
        res = res[res["fdr"] <= fdr_cutoff]
    return res.sort_values(["pval", "term"]).groupby("module", observed=True, sort=False).head(n_top)


@doc_params(ax_show_save=doc_ax_show_save, returns_axes=doc_returns_axes)
def enrichment(
    results: pd.DataFrame,
    *,
    n_top: int = 5,
    groups: Sequence[str] | None = None,
    fdr_cutoff: float | None = 0.05,
    cmap: str = "Reds",
    max_term_length: int = 60,
    figsize: tuple[float, float] | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Bubble plot of the top enriched terms per module.

    One module: terms against their gene ratio, coloured by -log10 FDR, sized by overlap (the paper's ggplot2
    bubbles). Several modules: a dot plot, modules as columns, dot size the gene ratio and colour -log10 FDR.

    Parameters
    ----------
    results
        Table from :func:`musegnn_sc.tl.enrichment`.
    n_top
        Terms shown per module (lowest p-values).
    groups
        Modules to show; all in ``results`` by default.
    fdr_cutoff
        Show only terms with FDR at most this; ``None`` shows the top terms whatever their FDR.
    cmap
        Colour map of -log10 FDR.
    max_term_length
        Longer term names are cut.
    figsize
        Size of a new figure; chosen from the number of terms and modules if ``None``.
    {ax_show_save}

    {returns_axes}

    Examples
    --------
    >>> res = msg.tl.enrichment(gdata, "GO_Biological_Process_2023.gmt")
    >>> msg.pl.enrichment(res, groups=["3"], n_top=5)
    """
    missing = [c for c in _REQUIRED if c not in results]
    if missing:
        msg = f"`results` lacks column(s) {missing}: pass the table returned by `msg.tl.enrichment`."
        raise ValueError(msg)
    top = top_terms(results, n_top=n_top, groups=groups, fdr_cutoff=fdr_cutoff)
    if top.empty:
        msg = (
            f"No term to show (fdr_cutoff={fdr_cutoff}, groups={groups}). Raise `fdr_cutoff` or pass "
            "`fdr_cutoff=None` to show the top terms whatever their FDR."
        )
        raise ValueError(msg)
    top = top.assign(
        label=[_shorten(str(t), max_term_length) for t in top["term"]],
        neglog_fdr=-np.log10(np.clip(top["fdr"].to_numpy(float), 1e-300, 1.0)),
    )
    present = set(top["module"].astype(str))
    cats = top["module"].cat.categories if hasattr(top["module"], "cat") else sorted(present)
    modules = [str(m) for m in cats if str(m) in present]
    rank = {m: i for i, m in enumerate(modules)}
    top = top.iloc[np.argsort([rank[str(m)] for m in top["module"]], kind="stable")]
    terms = list(dict.fromkeys(top["label"]))
    single = len(modules) == 1
    if figsize is None:
        width = 5.5 if single else 2.5 + 0.5 * len(modules)
        figsize = (width + 0.06 * min(max(map(len, terms)), max_term_length), 1.0 + 0.3 * len(terms))
    fig, ax = get_ax(ax, figsize)
    y = {t: len(terms) - 1 - i for i, t in enumerate(terms)}
    vmax = max(float(top["neglog_fdr"].max()), 1e-9)
    if single:
        x = top["gene_ratio"]
        ax.set_xlabel("gene ratio")
        ax.set_title(f"module {modules[0]}")
        lo, hi = float(x.min()), float(x.max())
        pad = 0.1 * (hi - lo) if hi > lo else 0.1 * hi + 1e-3
        ax.set_xlim(lo - pad, hi + pad)
        size_label, size_values = "genes", top["n_overlap"]
    else:
        xs = {m: i for i, m in enumerate(modules)}
        x = [xs[m] for m in top["module"].astype(str)]
        ax.set_xticks(range(len(modules)), modules)
        ax.set_xlim(-0.6, len(modules) - 0.4)
        ax.set_xlabel("module")
        size_label, size_values = "gene ratio", top["gene_ratio"]
    sizes = 30 + 220 * size_values / max(size_values.max(), 1e-12)
    sc = ax.scatter(
        x,
        [y[t] for t in top["label"]],
        s=sizes,
        c=top["neglog_fdr"],
        cmap=cmap,
        vmin=0,
        vmax=vmax,
        edgecolors="black",
        linewidths=0.4,
    )
    ax.set_yticks(range(len(terms)), list(reversed(terms)))
    ax.set_ylim(-0.6, len(terms) - 0.4)
    ax.grid(alpha=0.3)
    ax.set_axisbelow(True)
    fig.colorbar(sc, ax=ax, label="-log10 FDR", shrink=0.6)
    vmin_s, vmax_s = float(size_values.min()), float(size_values.max())
    smin, smax = float(np.min(sizes)), float(np.max(sizes))
    if smax > smin:
        # marker areas back to data values for the legend (sizes are affine in the values)
        handles, labels = sc.legend_elements(
            prop="sizes",
            num=3,
            alpha=0.6,
            fmt="{x:.2g}",
            func=lambda s: vmin_s + (s - smin) * (vmax_s - vmin_s) / (smax - smin),
        )
        ax.legend(handles, labels, title=size_label, loc="upper left", bbox_to_anchor=(1.25, 1.0), frameon=False)
    return finish(fig, ax, show=show, save=save)
