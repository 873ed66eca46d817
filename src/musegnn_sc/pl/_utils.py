"""Helpers shared by the plotting functions: axes creation, saving and showing as scanpy does."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Categorical palette used when ``uns['<key>_colors']`` does not give one (scanpy's default_20, then default_102).
_DEFAULT_PALETTE_SIZE = 20


def get_ax(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """The figure and axes to draw in: ``ax`` if given, else a new figure."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    return ax.figure, ax


def finish(fig: Figure, obj, *, show: bool | None, save: str | Path | None):
    """Save and/or show a figure; return ``obj`` unless it was shown (scanpy's ``show=None`` means autoshow)."""
    import matplotlib.pyplot as plt

    if save is not None:
        fig.savefig(save, bbox_inches="tight", dpi=150)
    if show is None:
        from scanpy import settings

        show = settings.autoshow
    if show:
        plt.show()
        return None
    return obj


def category_colors(uns: dict, key: str, categories: Sequence[str]) -> dict[str, str]:
    """Colours of ``categories``: ``uns['<key>_colors']`` when it matches (scanpy's convention), else a default palette.

    Reading the stored palette keeps colours consistent with ``sc.pl.umap``; nothing is written back.
    """
    from matplotlib import colors as mcolors
    from scanpy.plotting import palettes

    stored = uns.get(f"{key}_colors")
    if stored is not None and len(stored) >= len(categories):
        pal = list(stored)
    else:
        pal = list(palettes.default_20 if len(categories) <= _DEFAULT_PALETTE_SIZE else palettes.default_102)
        pal = [pal[i % len(pal)] for i in range(len(categories))]
    return {str(c): mcolors.to_hex(pal[i]) for i, c in enumerate(categories)}


def categories_of(values) -> list[str]:
    """Ordered categories of a Series (its categorical order, else sorted unique values), as strings."""
    if hasattr(values, "cat"):
        cats = [c for c in values.cat.categories if (values == c).any()]
        return [str(c) for c in cats]
    return [str(c) for c in sorted(np.unique(np.asarray(values).astype(str)))]
