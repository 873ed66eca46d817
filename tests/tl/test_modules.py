from __future__ import annotations

import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from musegnn_sc.datasets import toy_gdata
from musegnn_sc.tl._modules import gene_modules, module_summary


@pytest.fixture(scope="module")
def clustered():
    gdata = toy_gdata(random_state=1)
    # module M5 only in the ATAC dataset: a module that is not shared across omics
    m5 = gdata.obs["true_module"].astype(str).eq("M5").to_numpy()
    keep = ~m5 | gdata.obs["omics"].astype(str).eq("atac").to_numpy()
    gdata = gdata[keep].copy()
    out = gene_modules(gdata, resolution=0.5, copy=True)
    return gdata, out


def test_recovers_planted_modules(clustered):
    _, out = clustered
    assert adjusted_rand_score(out.obs["true_module"], out.obs["leiden"]) > 0.95
    assert out.obsm["X_umap"].shape == (out.n_obs, 2)
    assert "connectivities" in out.obsp


def test_copy_leaves_input_untouched(clustered):
    gdata, out = clustered
    assert out is not gdata
    assert "leiden" not in gdata.obs and "X_umap" not in gdata.obsm and "leiden" not in gdata.uns


def test_composition_and_shared_modules(clustered):
    _, out = clustered
    uns = out.uns["leiden"]
    comp = uns["composition"]
    assert set(comp) == {"dataset", "omics", "tissue", "species"}
    for key, tab in comp.items():
        assert tab.to_numpy().sum() == out.n_obs, key
        assert list(tab.index) == list(out.obs["leiden"].cat.categories)
    summary = uns["summary"]
    # the ATAC-only module is the only one not shared across omics
    atac_only = out.obs.loc[out.obs["true_module"].astype(str).eq("M5"), "leiden"].mode()[0]
    assert not summary.loc[atac_only, "shared_omics"]
    assert summary.loc[atac_only, "top_omics"] == "atac"
    assert summary.drop(index=atac_only)["shared_omics"].all()
    assert (summary["n_unique_genes"] == 30).all()
    assert uns["params"]["resolution"] == 0.5
    assert uns["params"]["use_rep"] == "X_musegnn"


def test_inplace_returns_none_and_is_deterministic():
    a, b = toy_gdata(genes_per_module=12, n_modules=4), toy_gdata(genes_per_module=12, n_modules=4)
    assert gene_modules(a, umap=False, key_added="mod") is None
    gene_modules(b, umap=False, key_added="mod")
    assert "mod" in a.obs and "X_umap" not in a.obsm
    pd.testing.assert_series_equal(a.obs["mod"], b.obs["mod"])


def test_module_summary_min_fraction():
    obs = pd.DataFrame(
        {
            "m": pd.Categorical(["a"] * 20 + ["b"] * 10),
            "omics": ["rna"] * 19 + ["atac"] + ["rna"] * 5 + ["atac"] * 5,
            "gene": [f"g{i}" for i in range(30)],
        }
    )
    comp, summary = module_summary(obs, "m", min_fraction=0.1)
    assert comp["omics"].loc["a", "atac"] == 1 and comp["omics"].loc["b", "atac"] == 5
    # one ATAC gene in twenty is below the 10% threshold: module a is not shared
    assert summary["shared_omics"].tolist() == [False, True]
    assert summary["top_omics_fraction"].tolist() == pytest.approx([0.95, 0.5])
    _, loose = module_summary(obs, "m", min_fraction=0.01)
    assert loose["shared_omics"].all()


def test_missing_embedding_is_explained():
    gdata = toy_gdata(n_modules=2, genes_per_module=5)
    del gdata.obsm["X_musegnn"]
    with pytest.raises(KeyError, match="train_musegnn"):
        gene_modules(gdata)
