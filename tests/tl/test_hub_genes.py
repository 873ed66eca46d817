from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import musegnn_sc as msg

#: Hub genes planted per module by the simulator (``toy_mudata(n_hubs=...)``).
N_HUBS = 3
DATASETS = ["rna_heart_1", "rna_heart_2", "rna_lung_1", "rna_heart_mouse", "atac_heart_1", "spatial_brain_1"]


@pytest.fixture(scope="module")
def data():
    mdata = msg.datasets.toy_mudata(n_cells=600, seed=0)
    gdata = msg.datasets.toy_module_gdata(mdata)
    return mdata, gdata


@pytest.fixture(scope="module")
def hub_data():
    """The simulator with three planted hub genes per module (loadings 1.3-1.5 against 0.5-0.9 for the others)."""
    mdata = msg.datasets.toy_mudata(n_cells=600, n_hubs=N_HUBS, seed=0)
    return mdata, msg.datasets.toy_module_gdata(mdata)


def _planted_hubs(mdata, dataset: str) -> dict[str, set[str]]:
    truth = mdata.uns["toy_truth"]["genes"].query("dataset == @dataset")
    return {str(m): set(d["gene"]) for m, d in truth[truth["is_hub"]].groupby("module", observed=True)}


def _correlation_embedding(adata) -> np.ndarray:
    """Gene vectors whose cosine similarity is the genes' Pearson correlation (every principal component kept).

    The standardised log-normalised expression ``Z`` (cells x genes) is ``U S V^T``; the rows of ``V S`` are the gene
    vectors, so ``(V S)(V S)^T = Z^T Z`` and the cosine of two genes is their correlation: a gene's centrality in its
    module is then its mean correlation with the module's other genes (WGCNA's intramodular connectivity).
    """
    X = adata.X.toarray().astype(np.float64)
    depth = X.sum(1, keepdims=True)
    L = np.log1p(X / depth * np.median(depth))
    Z = (L - L.mean(0)) / L.std(0)
    _, s, vt = np.linalg.svd(Z, full_matrices=False)
    return (vt.T * s).astype(np.float32)


def test_simulator_plants_distinct_hubs(hub_data):
    mdata, _ = hub_data
    truth = mdata.uns["toy_truth"]["genes"]
    modules = truth[truth["module"].astype(str) != "none"]
    for (ds, m), d in modules.groupby(["dataset", "module"], observed=True):
        assert d["is_hub"].sum() == N_HUBS, (ds, m)
        # clearly larger loadings than any other gene of the module (1.3-1.5 x 0.9-1.1 against 0.5-0.9 x 0.8-1.2)
        assert d.loc[d["is_hub"], "loading"].min() > 1.15, (ds, m)
        assert d.loc[~d["is_hub"], "loading"].max() < 1.1, (ds, m)
    assert not truth.loc[truth["module"].astype(str) == "none", "is_hub"].any()
    # the same genes in every dataset where the module is co-expressed, orthologues in mouse
    hubs = modules[modules["is_hub"]].assign(human_gene=lambda t: t["human_gene"].astype(str))
    for m, d in hubs.groupby("module", observed=True):
        per_dataset = d.groupby("dataset", observed=True)["human_gene"].apply(frozenset)
        assert per_dataset.nunique() == 1, m


def test_hubs_are_opt_in():
    """Without ``n_hubs`` (the data every other test uses) no gene is a hub and no loading stands out."""
    truth = msg.datasets.toy_mudata(n_cells=80, seed=3).uns["toy_truth"]
    genes = truth["genes"]
    assert truth["params"]["n_hubs"] == 0
    assert not genes["is_hub"].any()
    module_genes = genes[genes["module"].astype(str) != "none"]
    assert module_genes["loading"].between(0.5 * 0.8, 0.9 * 1.2).all()
    with pytest.raises(ValueError, match="n_hubs"):
        msg.datasets.toy_mudata(n_cells=80, module_size=4, n_hubs=4)


@pytest.mark.parametrize("dataset", DATASETS)
def test_planted_hubs_rank_first_by_kme(hub_data, dataset):
    mdata, gdata = hub_data
    ad = mdata.mod[dataset]
    g = gdata[gdata.obs["dataset"] == dataset].copy()
    hubs = msg.tl.hub_genes(g, ad, n=None)
    planted = _planted_hubs(mdata, dataset)
    loading = mdata.uns["toy_truth"]["genes"].query("dataset == @dataset").set_index("gene")["loading"]
    assert set(hubs["module"].astype(str)) == set(planted)
    for m, d in hubs.groupby("module", observed=True):
        # the top N_HUBS genes by kME are exactly the planted hubs
        assert set(d["gene"].head(N_HUBS)) == planted[str(m)], (m, d.head(N_HUBS + 2))
        lo = loading.reindex(d["gene"]).to_numpy()
        assert stats.spearmanr(d["kME"], lo)[0] > 0.5, m
        assert (d["kME"] > 0.1).all()  # every module gene follows its eigengene (ATAC: sparse, weakly)
        assert list(d["rank"]) == list(range(1, len(d) + 1))
        assert d["kME"].is_monotonic_decreasing
    top = msg.tl.hub_genes(g, ad, n=N_HUBS)
    assert {m: set(d["gene"]) for m, d in top.groupby("module", observed=True)} == planted


@pytest.mark.parametrize("dataset", ["rna_heart_1", "rna_heart_2", "rna_lung_1"])
def test_planted_hubs_are_central_in_a_dataset_embedding(hub_data, dataset):
    """Embedding centrality (no cells passed) ranks the planted hubs first, in an embedding learnt from the counts."""
    mdata, gdata = hub_data
    ad = mdata.mod[dataset]
    g = gdata[gdata.obs["dataset"] == dataset].copy()
    emb = _correlation_embedding(ad)
    g.obsm["X_musegnn"] = emb[ad.var_names.get_indexer(g.obs["gene"])]
    hubs = msg.tl.hub_genes(g, n=N_HUBS)
    assert "kME" not in hubs
    assert {m: set(d["gene"]) for m, d in hubs.groupby("module", observed=True)} == _planted_hubs(mdata, dataset)
    # and in the toy embedding, where a gene's distance to its module's centre falls as its loading grows
    toy = msg.tl.hub_genes(gdata[gdata.obs["dataset"] == dataset].copy(), n=N_HUBS)
    assert {m: set(d["gene"]) for m, d in toy.groupby("module", observed=True)} == _planted_hubs(mdata, dataset)


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
