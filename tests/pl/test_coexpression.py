from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from matplotlib.axes import Axes
from scipy import sparse

from musegnn_sc.pl._coexpression import coexpression, ego_graph


@pytest.fixture
def adata():
    # a star around G0 (G1..G6, correlations 0.9 .. -0.4), an edge G1-G2 and an isolated gene G7
    n = 8
    corr = np.zeros((n, n))
    for j, c in zip(range(1, 7), [0.9, 0.7, 0.5, -0.2, -0.3, -0.4], strict=True):
        corr[0, j] = corr[j, 0] = c
    corr[1, 2] = corr[2, 1] = 0.6
    np.fill_diagonal(corr, 1.0)
    adj = (corr != 0).astype(np.float32)
    a = ad.AnnData(np.zeros((3, n), dtype=np.float32))
    a.var_names = [f"G{i}" for i in range(n)]
    a.varp["coexpression_connectivities"] = sparse.csr_matrix(adj)
    a.varp["coexpression_correlation"] = sparse.csr_matrix(corr)
    return a


def test_ego_graph_keeps_strongest_neighbours(adata):
    nodes, adj, corr = ego_graph(
        adata.varp["coexpression_connectivities"],
        adata.varp["coexpression_correlation"],
        adata.var_names,
        "G0",
        max_neighbors=4,
    )
    assert nodes == ["G0", "G1", "G2", "G3", "G6"]
    assert adj[0, 1:].all() and adj[1, 2] and not adj[3, 4] and not adj.diagonal().any()
    assert corr[0, 4] == pytest.approx(-0.4) and np.isnan(corr[3, 4])


def test_plot_edges_and_png(adata, tmp_path):
    ax = coexpression(adata, "G0", show=False, save=tmp_path / "ego.png")
    assert isinstance(ax, Axes)
    assert (tmp_path / "ego.png").stat().st_size > 0
    from matplotlib.collections import LineCollection

    lines = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert sorted(len(lc.get_segments()) for lc in lines) == [1, 6]
    assert {t.get_text() for t in ax.texts} == {f"G{i}" for i in range(7)}


def test_errors(adata):
    with pytest.raises(ValueError, match="no neighbour"):
        coexpression(adata, "G7", show=False)
    with pytest.raises(KeyError, match="not in the dataset"):
        coexpression(adata, "G99", show=False)
    with pytest.raises(KeyError, match="build_coexpression_graph"):
        coexpression(adata, "G0", key="other", show=False)
