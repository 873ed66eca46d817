"""Training curves of MuSe-GNN: the total loss and its terms per epoch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from musegnn_sc._docs import doc_ax_show_save, doc_params, doc_returns_axes

from ._utils import finish, get_ax


def history_frame(model_or_gdata: Any) -> pd.DataFrame:
    """The loss history as a DataFrame indexed by epoch, from a model, a gene-level AnnData or a table.

    Accepts an object with a ``history`` DataFrame (:class:`musegnn_sc.model.MuSeGNN`), an AnnData with
    ``uns['musegnn']['history']`` (a mapping of columns, ``epoch`` included, as the model stores it), a DataFrame, a
    mapping of columns or a list of per-epoch records.
    """
    hist = model_or_gdata
    uns = getattr(model_or_gdata, "uns", None)
    if uns is not None:
        if "musegnn" not in uns or "history" not in uns["musegnn"]:
            msg = (
                "No loss history in `gdata.uns['musegnn']['history']`. Pass the gene-level AnnData returned by "
                "`msg.tl.train_musegnn` (or the model itself)."
            )
            raise KeyError(msg)
        hist = uns["musegnn"]["history"]
    elif not isinstance(model_or_gdata, pd.DataFrame | Mapping | list) and hasattr(model_or_gdata, "history"):
        hist = model_or_gdata.history
    if isinstance(hist, Mapping):
        hist = pd.DataFrame({k: np.asarray(v) for k, v in hist.items()})
    elif isinstance(hist, list):
        hist = pd.DataFrame(hist)
    if not isinstance(hist, pd.DataFrame):
        msg = f"Cannot read a loss history from a {type(model_or_gdata).__name__}: pass a model, gdata or DataFrame."
        raise TypeError(msg)
    if "epoch" in hist.columns:
        hist = hist.set_index("epoch")
    hist = hist.select_dtypes("number")
    if hist.empty:
        msg = "The loss history is empty: train the model first."
        raise ValueError(msg)
    return hist


@doc_params(ax_show_save=doc_ax_show_save, returns_axes=doc_returns_axes)
def loss_history(
    model_or_gdata: Any,
    *,
    keys: Sequence[str] | None = None,
    log: bool = False,
    figsize: tuple[float, float] = (5.0, 3.5),
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Plot the loss terms per epoch.

    Parameters
    ----------
    model_or_gdata
        A trained :class:`musegnn_sc.model.MuSeGNN` (its ``history``), the gene-level AnnData it returned
        (``uns['musegnn']['history']``) or a history DataFrame (epochs x terms).
    keys
        Terms to draw (``'loss'``, ``'bce'``, ``'sim'``, ``'infonce'``); all numeric columns by default.
    log
        Logarithmic y axis (only sensible when every drawn term is positive).
    figsize
        Size of a new figure (when ``ax`` is ``None``).
    {ax_show_save}

    {returns_axes}

    Examples
    --------
    >>> gdata = msg.tl.train_musegnn(mdata)
    >>> msg.pl.loss_history(gdata)
    """
    hist = history_frame(model_or_gdata)
    cols = list(hist.columns) if keys is None else list(keys)
    missing = [k for k in cols if k not in hist.columns]
    if missing:
        msg = f"Term(s) {missing} not in the loss history (available: {list(hist.columns)})."
        raise KeyError(msg)
    fig, ax = get_ax(ax, figsize)
    for c in cols:
        ax.plot(hist.index.to_numpy(), hist[c].to_numpy(float), marker="o" if len(hist) < 30 else None, ms=3, label=c)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    return finish(fig, ax, show=show, save=save)
