from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

import musegnn_sc as msg


@pytest.fixture(scope="module")
def toy():
    mdata = msg.datasets.toy_mudata(n_samples=4, seed=0)
    gdata = msg.datasets.toy_module_gdata(mdata)
    ad = mdata.mod["rna_heart_1"].copy()
    g = gdata[gdata.obs["dataset"] == "rna_heart_1"].copy()
    msg.tl.score_modules(ad, g)
    return mdata, gdata, g, ad


def test_module_trait_heatmap_with_stars(toy, tmp_path):
    _, _, _, ad = toy
    ad = ad.copy()
    res = msg.tl.module_trait_correlation(ad, ["condition"])
    ax = msg.pl.module_trait(ad, show=False, save=tmp_path / "mt.png")
    assert (tmp_path / "mt.png").stat().st_size > 0
    img = ax.images[0].get_array()
    assert img.shape == (4, 2)
    np.testing.assert_allclose(img[1, 1], res.query("module == 'M2' and trait == 'condition: stim'")["correlation"])
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 8
    # the planted condition module is significant, its star is drawn
    assert any(t.endswith("***") for t in texts)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["M1", "M2", "M3", "M4"]
    ax2 = msg.pl.module_trait(res, annotate=False, show=False)
    assert not ax2.texts
    with pytest.raises(KeyError, match="module_trait_correlation"):
        msg.pl.module_trait(toy[3].copy(), key="missing", show=False)


def test_module_network_draws_hubs(toy):
    _, gdata, g, ad = toy
    ax = msg.pl.module_network(g, ad, modules=["M1", "M2"], n=6, show=False)
    labels = {t.get_text() for t in ax.texts}
    hubs = msg.tl.hub_genes(g, ad, modules=["M1", "M2"], n=6)
    assert labels == set(hubs["gene"])
    nodes, edges = ax.collections[1], ax.collections[0]
    assert len(nodes.get_offsets()) == 12
    assert len(edges.get_segments()) >= 6
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["M1", "M2"]
    plt.close("all")
    ax = msg.pl.module_network(gdata, modules=["M5"], n=5, show=False)
    assert "centrality" in ax.get_title() and "embedding" in ax.get_title()
    with pytest.raises(ValueError, match="pass `adata`"):
        msg.pl.module_network(gdata, edges="coexpression", show=False)


def test_spatial_module_maps(toy, tmp_path):
    mdata, gdata, _, _ = toy
    sp = mdata.mod["spatial_brain_1"].copy()
    msg.tl.score_modules(sp, gdata[gdata.obs["dataset"] == "spatial_brain_1"].copy())
    res = msg.tl.spatial_modules(sp)
    axes = msg.pl.spatial_modules(sp, n=2, show=False, save=tmp_path / "sp.png")
    assert len(axes) == 2
    assert axes[0].get_title().startswith(f"{res.index[0]} (Moran's I = ")
    assert len(axes[0].collections[0].get_offsets()) == sp.n_obs
    with pytest.raises(KeyError, match="'M9'"):
        msg.pl.spatial_modules(sp, modules=["M9"], show=False)
