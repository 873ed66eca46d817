from __future__ import annotations

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.colors import to_hex

from musegnn_sc.pl._embedding import embedding


def test_categorical_colours_and_png(gdata, tmp_path):
    path = tmp_path / "umap.png"
    ax = embedding(gdata, color="omics", show=False, save=path)
    assert isinstance(ax, Axes)
    assert path.stat().st_size > 0
    points = ax.collections[0]
    assert points.get_offsets().shape == (gdata.n_obs, 2)
    assert len({to_hex(c) for c in points.get_facecolors()}) == 3
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["atac", "rna", "spatial"]


def test_stored_palette_is_used_not_written(gdata):
    gdata.uns["omics_colors"] = ["#000000", "#ff0000", "#00ff00"]
    before = set(gdata.uns)
    ax = embedding(gdata, color="omics", show=False)
    assert {to_hex(c) for c in ax.collections[0].get_facecolors()} == {"#000000", "#ff0000", "#00ff00"}
    assert set(gdata.uns) == before


def test_highlight_genes_and_grid(gdata, tmp_path):
    axes = embedding(
        gdata, color=["leiden", "dataset"], highlight=["GENE0001", "GENE0016"], show=False, save=tmp_path / "grid.png"
    )
    assert isinstance(axes, list) and len(axes) == 2
    for ax in axes:
        circles = ax.collections[-1]
        # each highlighted gene is circled in every one of the 4 datasets
        assert circles.get_offsets().shape == (8, 2)
        assert sorted({t.get_text() for t in ax.texts}) == ["GENE0001", "GENE0016"]


def test_mask_highlight_continuous_colour_and_errors(gdata):
    gdata.obs["score"] = np.linspace(0, 1, gdata.n_obs)
    mask = np.zeros(gdata.n_obs, bool)
    mask[:3] = True
    ax = embedding(gdata, color="score", highlight=mask, labels=False, show=False)
    assert ax.collections[-1].get_offsets().shape == (3, 2) and not ax.texts
    with pytest.raises(ValueError, match="None of the highlighted"):
        embedding(gdata, highlight=["NOPE"], show=False)
    with pytest.raises(KeyError, match="obs column"):
        embedding(gdata, color="no_such_column", show=False)
    del gdata.obsm["X_umap"]
    with pytest.raises(KeyError, match="gene_modules"):
        embedding(gdata, color="omics", show=False)
