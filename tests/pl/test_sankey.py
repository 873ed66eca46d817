from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes

from musegnn_sc.pl._sankey import sankey, sankey_layout


def test_layout_heights_follow_counts():
    counts = pd.DataFrame([[3, 1, 0], [0, 2, 4]], index=["rna", "atac"], columns=["0", "1", "2"])
    left, right, flows = sankey_layout(counts, gap=0.0)
    assert left["rna"][1] - left["rna"][0] == pytest.approx(0.4)
    assert right["2"][1] - right["2"][0] == pytest.approx(0.4)
    assert len(flows) == 4
    for s, t, (lb, lt), (rb, rt) in flows:
        assert lt - lb == pytest.approx(counts.loc[s, t] / 10)
        assert rt - rb == pytest.approx(lt - lb)
    # the ribbons of a node tile it exactly
    rna = sorted((lb, lt) for s, _, (lb, lt), _ in flows if s == "rna")
    assert rna[0][0] == pytest.approx(left["rna"][0]) and rna[-1][1] == pytest.approx(left["rna"][1])
    with pytest.raises(ValueError, match="zero"):
        sankey_layout(counts * 0)


def test_sankey_draws_one_ribbon_per_flow(gdata, tmp_path):
    gdata.obs.loc[gdata.obs["omics"] == "atac", "leiden"] = "0"
    ax = sankey(gdata, source="omics", target="leiden", show=False, save=tmp_path / "sankey.png")
    assert isinstance(ax, Axes)
    assert (tmp_path / "sankey.png").stat().st_size > 0
    n_flows = int((pd.crosstab(gdata.obs["omics"], gdata.obs["leiden"]).to_numpy() > 0).sum())
    assert len(ax.collections) == n_flows
    assert len(ax.patches) == 3 + 4
    labels = {t.get_text() for t in ax.texts}
    assert {"rna", "atac", "spatial", "0", "3"} <= labels
    assert np.isfinite(ax.get_ylim()).all()


def test_missing_column(gdata):
    with pytest.raises(KeyError, match="gene_modules"):
        sankey(gdata, target="modules", show=False)
