from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import musegnn_sc as msg
from musegnn_sc.tl import _score_modules


@pytest.fixture(scope="module")
def mdata():
    return msg.datasets.toy_mudata(n_samples=6, seed=0)


@pytest.fixture(scope="module")
def gdata(mdata):
    return msg.datasets.toy_module_gdata(mdata)


def _rna(mdata):
    return mdata.mod["rna_heart_1"].copy()


def _gdata_of(gdata, dataset):
    return gdata[gdata.obs["dataset"] == dataset].copy()


def test_eigengene_recovers_planted_activity(mdata, gdata):
    ad = _rna(mdata)
    msg.tl.score_modules(ad, _gdata_of(gdata, "rna_heart_1"))
    scores = ad.obsm["module_scores"]
    truth = mdata.uns["toy_truth"]["activity"]["rna_heart_1"]
    assert isinstance(scores, pd.DataFrame)
    assert list(scores.index) == list(ad.obs_names)
    rng = np.random.default_rng(0)
    background = np.flatnonzero(ad.var["module"].astype(str) == "none")
    for m in truth.columns:
        r = np.corrcoef(scores[m], truth[m])[0, 1]
        assert r > 0.85, (m, r)
        # random gene sets of the same size: their eigengene follows no planted factor
        genes = ad.var_names[rng.choice(background, 20, replace=False)]
        fake = pd.DataFrame({"gene": genes, "leiden": "R"})
        g = msg.datasets.toy_module_gdata(mdata)[:20].copy()
        g.obs["gene"] = genes.to_numpy()
        g.obs["leiden"] = pd.Categorical(fake["leiden"])
        rnd = msg.tl.score_modules(ad, g, key_added="rnd", copy=True).obsm["rnd"]["R"]
        assert np.abs(np.corrcoef(rnd, truth[m])[0, 1]) < 0.3
    info = ad.uns["module_scores"]
    assert info["params"]["method"] == "eigengene"
    assert info["params"]["normalized_counts"]
    assert set(info["modules"].index) == set(truth.columns)
    assert (info["modules"]["variance_explained"] > 0.2).all()
    np.testing.assert_allclose(scores.mean(), 0, atol=1e-10)
    np.testing.assert_allclose(scores.std(ddof=0), 1, atol=1e-10)


def test_eigengene_matches_numpy_svd_and_sign():
    rng = np.random.default_rng(1)
    f = rng.standard_normal(300)
    X = np.log1p(rng.poisson(np.exp(0.3 + np.outer(f, rng.uniform(0.4, 0.9, 12))))).astype(float)
    X[:, 5] = -X[:, 5]  # a negatively loaded gene must not flip the sign
    score, v, varexp = _score_modules.eigengene(X)
    Z = (X - X.mean(0)) / X.std(0)
    U, S, Vt = np.linalg.svd(Z, full_matrices=False)
    pc1 = U[:, 0] * S[0]
    assert abs(np.corrcoef(score, pc1)[0, 1]) > 1 - 1e-10
    np.testing.assert_allclose(varexp, S[0] ** 2 / (S**2).sum(), rtol=1e-8)
    assert np.corrcoef(score, Z.mean(1))[0, 1] > 0
    # sparse input, and the matrix-free solver for large modules, give the same eigengene
    s_sparse, _, _ = _score_modules.eigengene(sparse.csr_matrix(X))
    np.testing.assert_allclose(s_sparse, score, atol=1e-8)
    old = _score_modules._DENSE_MAX_GENES
    try:
        _score_modules._DENSE_MAX_GENES = 3
        s_op, _, ve_op = _score_modules.eigengene(sparse.csr_matrix(X))
    finally:
        _score_modules._DENSE_MAX_GENES = old
    np.testing.assert_allclose(s_op, score, atol=1e-6)
    np.testing.assert_allclose(ve_op, varexp, rtol=1e-6)


def test_counts_log_data_sparse_dense_agree(mdata, gdata):
    g = _gdata_of(gdata, "rna_heart_1")
    ad = _rna(mdata)
    msg.tl.score_modules(ad, g)
    dense = ad.copy()
    dense.X = dense.X.toarray()
    msg.tl.score_modules(dense, g)
    np.testing.assert_allclose(dense.obsm["module_scores"], ad.obsm["module_scores"], atol=1e-8)
    import scanpy as sc

    logged = ad.copy()
    sc.pp.normalize_total(logged, target_sum=float(np.median(np.asarray(ad.X.sum(1)))))
    sc.pp.log1p(logged)
    msg.tl.score_modules(logged, g)
    assert not logged.uns["module_scores"]["params"]["normalized_counts"]
    np.testing.assert_allclose(logged.obsm["module_scores"], ad.obsm["module_scores"], atol=1e-5)


def test_decoupler_agrees_with_eigengene(mdata, gdata):
    ad = _rna(mdata)
    g = _gdata_of(gdata, "rna_heart_1")
    msg.tl.score_modules(ad, g)
    msg.tl.score_modules(ad, g, method="zscore", key_added="z")
    assert "z_padj" in ad.obsm
    for m in ad.obsm["module_scores"].columns:
        r = np.corrcoef(ad.obsm["module_scores"][m], ad.obsm["z"][m])[0, 1]
        assert r > 0.9, (m, r)
    assert ad.uns["z"]["params"]["method"] == "zscore"


@pytest.mark.slow
def test_decoupler_ulm_and_aucell(mdata, gdata):
    ad = _rna(mdata)
    g = _gdata_of(gdata, "rna_heart_1")
    msg.tl.score_modules(ad, g)
    from scipy import stats

    for method in ("ulm", "aucell"):
        msg.tl.score_modules(ad, g, method=method, key_added=method)
        for m in ad.obsm["module_scores"].columns:
            rho = stats.spearmanr(ad.obsm["module_scores"][m], ad.obsm[method][m])[0]
            assert rho > 0.7, (method, m, rho)


def test_mudata_every_modality(mdata, gdata):
    md = mdata.copy()
    with pytest.warns(UserWarning, match="not scored: M5"):
        msg.tl.score_modules(md, gdata, mods=["atac_heart_1", "spatial_brain_1", "rna_heart_mouse"])
    truth = mdata.uns["toy_truth"]["activity"]
    for name in ("atac_heart_1", "spatial_brain_1", "rna_heart_mouse"):
        scores = md.mod[name].obsm["module_scores"]
        for m in truth[name].columns:
            assert np.corrcoef(scores[m], truth[name][m])[0, 1] > 0.75, (name, m)
    assert "module_scores" not in md.mod["rna_heart_1"].obsm
    out = msg.tl.score_modules(md, gdata, mods="rna_lung_1", modules=["M5"], copy=True)
    assert list(out.mod["rna_lung_1"].obsm["module_scores"].columns) == ["M5"]
    assert "module_scores" not in md.mod["rna_lung_1"].obsm


def test_gene_symbols(mdata, gdata):
    ad = _rna(mdata)
    g = _gdata_of(gdata, "rna_heart_1")
    ad.var["symbol"] = ad.var_names
    ad.var_names = [f"ENSG{i:011d}" for i in range(ad.n_vars)]
    with pytest.raises(ValueError, match="Ensembl IDs: pass `gene_symbols=`"):
        msg.tl.score_modules(ad, g)
    msg.tl.score_modules(ad, g, gene_symbols="symbol")
    ref = _rna(mdata)
    msg.tl.score_modules(ref, g)
    np.testing.assert_allclose(ad.obsm["module_scores"], ref.obsm["module_scores"])
    assert ad.uns["module_scores"]["genes"]["var_name"].str.startswith("ENSG").all()


def test_errors_and_small_modules(mdata, gdata):
    ad = _rna(mdata)
    g = _gdata_of(gdata, "rna_heart_1")
    mouse = mdata.mod["rna_heart_mouse"].copy()
    with pytest.raises(ValueError, match="another species"):
        msg.tl.score_modules(mouse, g)
    with pytest.raises(KeyError, match="gene_modules"):
        msg.tl.score_modules(ad, g, modules_key="nope")
    with pytest.raises(ValueError, match="Unknown `method='magic'`"):
        msg.tl.score_modules(ad, g, method="magic")
    with pytest.raises(TypeError, match="decoupler methods only"):
        msg.tl.score_modules(ad, g, times=3)
    with pytest.raises(KeyError, match="Layer 'x'"):
        msg.tl.score_modules(ad, g, layer="x")
    with pytest.raises(ValueError, match="`mods=`"):
        msg.tl.score_modules(ad, g, mods="rna")
    sub = ad[:, ad.var["module"].astype(str).isin(["M1", "none"]) | (np.arange(ad.n_vars) % 7 == 0)].copy()
    before = set(sub.obsm)
    with pytest.raises(ValueError, match="min_genes=50"):
        msg.tl.score_modules(sub, g, min_genes=50)
    assert set(sub.obsm) == before
    with pytest.warns(UserWarning, match=r"not scored: M2 \(\d of 20 genes\)"):
        msg.tl.score_modules(sub, g)
    assert "M1" in sub.obsm["module_scores"]
