from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import musegnn_sc as msg


@pytest.fixture(scope="module")
def data():
    mdata = msg.datasets.toy_mudata(n_cells=600, seed=0)
    gdata = msg.datasets.toy_module_gdata(mdata)
    return mdata, gdata


def test_planted_hubs_rank_first_by_kme(data):
    mdata, gdata = data
    ad = mdata.mod["rna_heart_1"]
    g = gdata[gdata.obs["dataset"] == "rna_heart_1"].copy()
    hubs = msg.tl.hub_genes(g, ad, n=None)
    loading = mdata.uns["toy_truth"]["genes"].query("dataset == 'rna_heart_1'").set_index("gene")["loading"]
    for m, d in hubs.groupby("module", observed=True):
        lo = loading.reindex(d["gene"]).to_numpy()
        assert stats.spearmanr(d["kME"], lo)[0] > 0.5, m
        # the top hub is a planted hub: in the upper half of the loadings, and the top 3 beat the module's mean
        assert lo[0] >= np.median(lo)
        assert lo[:3].mean() > lo.mean()
        assert (d["kME"] > 0.3).all()
        assert list(d["rank"]) == list(range(1, len(d) + 1))
        assert d["kME"].is_monotonic_decreasing


def test_kme_is_correlation_with_eigengene(data):
    mdata, gdata = data
    ad = mdata.mod["rna_heart_1"]
    g = gdata[gdata.obs["dataset"] == "rna_heart_1"].copy()
    hubs = msg.tl.hub_genes(g, ad, n=3, modules=["M2"])
    out = msg.tl.score_modules(ad, g, modules=["M2"], copy=True)
    me = out.obsm["module_scores"]["M2"].to_numpy()
    X = ad[:, hubs["gene"]].X.toarray()
    tot = np.asarray(ad.X.sum(1)).ravel()
    L = np.log1p(X / tot[:, None] * np.median(tot))
    expected = [np.corrcoef(L[:, j], me)[0, 1] for j in range(3)]
    np.testing.assert_allclose(hubs["kME"], expected, atol=1e-8)


def test_centrality_and_datasets(data):
    mdata, gdata = data
    hubs = msg.tl.hub_genes(gdata, n=None)
    assert "kME" not in hubs
    truth = mdata.uns["toy_truth"]["genes"]
    n_ds = truth[truth["module"].astype(str) != "none"].groupby("gene", observed=True).size()
    for m, d in hubs.groupby("module", observed=True):
        assert d["centrality"].is_monotonic_decreasing, m
    # in one dataset's embedding, the planted hubs (largest loadings) are the central genes
    one = msg.tl.hub_genes(gdata[gdata.obs["dataset"] == "rna_heart_1"].copy(), n=None)
    loading = truth.query("dataset == 'rna_heart_1'").set_index("gene")["loading"]
    for m, d in one.groupby("module", observed=True):
        assert stats.spearmanr(d["centrality"], loading.reindex(d["gene"]))[0] > 0.5, m
    # a gene's rows: the human gene and its mouse orthologue are different names, each with its datasets
    np.testing.assert_array_equal(hubs["n_datasets"], n_ds.reindex(hubs["gene"]).to_numpy())
    assert set(hubs.loc[hubs["module"] == "M5", "datasets"]) == {"rna_lung_1"}
    # centrality: mean cosine to the module's other genes
    g = gdata[gdata.obs["leiden"] == "M5"]
    V = g.obsm["X_musegnn"] / np.linalg.norm(g.obsm["X_musegnn"], axis=1, keepdims=True)
    cos = V @ V.T
    expected = (cos.sum(1) - 1) / (len(V) - 1)
    top = hubs[hubs["module"] == "M5"]
    got = dict(zip(top["gene"], top["centrality"], strict=True))
    np.testing.assert_allclose([got[x] for x in g.obs["gene"]], expected, atol=1e-5)


def test_errors(data):
    _, gdata = data
    with pytest.raises(ValueError, match="pass `adata`"):
        msg.tl.hub_genes(gdata, sort_by="kME")
    with pytest.raises(KeyError, match="'M9'"):
        msg.tl.hub_genes(gdata, modules=["M9"])
    with pytest.raises(ValueError, match="`n`"):
        msg.tl.hub_genes(gdata, n=0)
