from __future__ import annotations

import numpy as np
import pytest

import musegnn_sc as msg


@pytest.fixture(scope="module")
def spatial():
    mdata = msg.datasets.toy_mudata(seed=0)
    gdata = msg.datasets.toy_module_gdata(mdata)
    sp = mdata.mod["spatial_brain_1"].copy()
    msg.tl.score_modules(sp, gdata[gdata.obs["dataset"] == "spatial_brain_1"].copy())
    return mdata, sp


def test_planted_spatial_modules_have_high_moran(spatial):
    mdata, sp = spatial
    before = (set(sp.obsm), set(sp.obsp), set(sp.uns))
    res = msg.tl.spatial_modules(sp)
    modules = mdata.uns["toy_truth"]["modules"].set_index("module")
    patterned = [m for m in res.index if modules.loc[m, "spatial_pattern"]]
    background = [m for m in res.index if not modules.loc[m, "spatial_pattern"]]
    assert sorted(patterned) == ["M1", "M6"]
    assert (res.loc[patterned, "I"] > 0.5).all()
    assert (res.loc[background, "I"] < 0.25).all()
    assert res["I"].is_monotonic_decreasing
    # only the documented key is written: the graph is built on a temporary object
    assert (set(sp.obsm), set(sp.obsp)) == before[:2]
    assert set(sp.uns) - before[2] == {"module_scores_moranI"}
    assert sp.uns["module_scores_moranI"]["params"]["graph_built"]


def test_moran_formula_on_existing_graph(spatial):
    from musegnn_sc.tl._spatial_modules import import_squidpy

    sq = import_squidpy()
    _, sp = spatial
    sp = sp.copy()
    sq.gr.spatial_neighbors_knn(sp, n_neighs=6)
    res = msg.tl.spatial_modules(sp, key_added="mi")
    assert not sp.uns["mi"]["params"]["graph_built"]
    W = sp.obsp["spatial_connectivities"].toarray()
    W = W / W.sum(1, keepdims=True)  # squidpy's default row standardisation
    x = sp.obsm["module_scores"]["M1"].to_numpy()
    z = x - x.mean()
    expected = len(x) / W.sum() * (z @ W @ z) / (z @ z)
    np.testing.assert_allclose(res.loc["M1", "I"], expected, rtol=1e-6)


def test_spatial_errors(spatial):
    mdata, _ = spatial
    rna = mdata.mod["rna_heart_1"].copy()
    with pytest.raises(KeyError, match="score_modules"):
        msg.tl.spatial_modules(rna)
    gdata = msg.datasets.toy_module_gdata(mdata)
    msg.tl.score_modules(rna, gdata[gdata.obs["dataset"] == "rna_heart_1"].copy())
    with pytest.raises(KeyError, match="spot coordinates"):
        msg.tl.spatial_modules(rna)
