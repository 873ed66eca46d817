"""The benchmark table (methods x metrics) as a figure, like the paper's Table 1."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from musegnn_sc._docs import doc_ax_show_save, doc_params, doc_returns_axes

from ._utils import finish, get_ax

#: Columns of a long benchmark table that are not metrics.
_NOT_METRICS = ("seed", "run", "replicate", "time", "time_s", "memory", "peak_memory_mb")


def summarize_table(table: pd.DataFrame, *, method_key: str = "method") -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Mean (and standard deviation over seeds) of every metric per method.

    A table with a ``method_key`` column may have several rows per method (seeds): they are averaged. Otherwise the
    index names the methods and the numeric columns are the metrics.
    """
    if method_key in table.columns:
        num = table.drop(columns=[c for c in _NOT_METRICS if c in table.columns]).set_index(method_key)
        num = num.select_dtypes("number")
        grouped = num.groupby(level=0, sort=False)
        mean = grouped.mean()
        sd = grouped.std(ddof=1) if grouped.size().max() > 1 else None
    else:
        mean = table.select_dtypes("number")
        sd = None
    if mean.empty:
        msg = "The table has no numeric metric column: pass methods as rows and metrics as columns."
        raise ValueError(msg)
    return mean, sd


@doc_params(ax_show_save=doc_ax_show_save, returns_axes=doc_returns_axes)
def metrics(
    table: pd.DataFrame,
    *,
    method_key: str = "method",
    higher_is_better: Mapping[str, bool] | None = None,
    cmap: str = "YlGn",
    fmt: str = ".3f",
    figsize: tuple[float, float] | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Draw a benchmark table as a coloured grid, best value of each metric in bold.

    Cells are coloured by the value min-max scaled within each metric (so metrics on different scales compare), and
    show the mean, with ``± sd`` when several seeds per method are given. Missing values (NaN) are left grey.

    Parameters
    ----------
    table
        Methods x metrics (index = methods), or a long table with a ``method_key`` column and one row per seed, such
        as the benchmark writes (``avg_score``/``avg_rank`` columns of :func:`musegnn_sc.tl.score_methods` are drawn
        as metrics too).
    method_key
        Column of method names in a long table.
    higher_is_better
        ``{{metric: False}}`` for metrics where lower is better; ``avg_rank`` and columns containing ``rank`` are lower
        is better by default, all others higher.
    cmap
        Colour map of the scaled values.
    fmt
        Number format of the cells.
    figsize
        Size of a new figure; chosen from the table's shape if ``None``.
    {ax_show_save}

    {returns_axes}

    Examples
    --------
    >>> msg.pl.metrics(pd.read_csv("benchmark.csv"))
    """
    import matplotlib.pyplot as plt

    mean, sd = summarize_table(table, method_key=method_key)
    better = {c: "rank" not in str(c).lower() for c in mean.columns}
    better.update(dict(higher_is_better or {}))
    scaled = pd.DataFrame(index=mean.index, columns=mean.columns, dtype=float)
    for c in mean.columns:
        v = mean[c].to_numpy(float)
        if np.isnan(v).all():
            # a metric undefined for every method stays blank rather than failing the whole table
            scaled[c] = np.nan
            continue
        lo, hi = np.nanmin(v), np.nanmax(v)
        s = (v - lo) / (hi - lo) if hi > lo else np.full_like(v, 0.5)
        scaled[c] = s if better[c] else 1 - s
    n_rows, n_cols = mean.shape
    if figsize is None:
        figsize = (1.5 + 1.3 * n_cols, 0.8 + 0.45 * n_rows)
    fig, ax = get_ax(ax, figsize)
    colormap = plt.get_cmap(cmap).with_extremes(bad="#eeeeee")
    ax.imshow(np.ma.masked_invalid(scaled.to_numpy(float)), cmap=colormap, vmin=0, vmax=1.25, aspect="auto")
    for j, c in enumerate(mean.columns):
        col = mean[c].to_numpy(float)
        if np.isnan(col).all():
            best = -1
        else:
            best = np.nanargmax(col) if better[c] else np.nanargmin(col)
        for i in range(n_rows):
            text = format(col[i], fmt)
            if sd is not None and np.isfinite(sd.iloc[i, j]):
                text += f"\n\u00b1{format(sd.iloc[i, j], fmt)}"
            dark = scaled.iloc[i, j] > 0.7
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=7,
                color="white" if dark else "black",
                fontweight="bold" if i == best else "normal",
            )
    ax.set_xticks(range(n_cols), [str(c) for c in mean.columns], rotation=30, ha="right")
    ax.set_yticks(range(n_rows), [str(r) for r in mean.index])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return finish(fig, ax, show=show, save=save)
