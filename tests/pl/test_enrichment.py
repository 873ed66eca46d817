from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes

from musegnn_sc.pl._enrichment import enrichment, top_terms
from musegnn_sc.tl._enrichment import enrichment as run_enrichment


@pytest.fixture
def results(gdata):
    sets = {
        f"set_{m}_{k}": [f"GENE{i:04d}" for i in range(15 * m + k, 15 * m + 10 + k)] for m in range(4) for k in range(3)
    }
    return run_enrichment(gdata, sets, min_size=3)


def test_dot_plot_of_several_modules(results, tmp_path):
    ax = enrichment(results, n_top=2, show=False, save=tmp_path / "dots.png")
    assert isinstance(ax, Axes)
    assert (tmp_path / "dots.png").stat().st_size > 0
    points = ax.collections[0].get_offsets()
    assert points.shape == (8, 2)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "3"]
    # colour encodes -log10 FDR
    top = top_terms(results, n_top=2, fdr_cutoff=0.05)
    np.testing.assert_allclose(np.sort(ax.collections[0].get_array()), np.sort(-np.log10(top["fdr"].to_numpy())))


def test_single_module_bubbles(results, tmp_path):
    ax = enrichment(results, groups=["1"], n_top=3, show=False, save=tmp_path / "one.png")
    assert ax.get_xlabel() == "gene ratio"
    x = ax.collections[0].get_offsets()[:, 0]
    expected = results[results["module"] == "1"].nsmallest(3, "pval")["gene_ratio"].to_numpy()
    np.testing.assert_allclose(np.sort(x), np.sort(expected))
    assert ax.get_title() == "module 1"


def test_errors(results):
    with pytest.raises(ValueError, match="fdr_cutoff"):
        enrichment(results, fdr_cutoff=1e-300, show=False)
    with pytest.raises(ValueError, match="msg.tl.enrichment"):
        enrichment(pd.DataFrame({"term": ["a"]}), show=False)
