from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import musegnn_sc as msg


@pytest.fixture(scope="module")
def scored():
    mdata = msg.datasets.toy_mudata(n_samples=6, condition_effect=1.0, seed=0)
    gdata = msg.datasets.toy_module_gdata(mdata)
    ad = mdata.mod["rna_heart_1"].copy()
    msg.tl.score_modules(ad, gdata[gdata.obs["dataset"] == "rna_heart_1"].copy())
    return mdata, ad


def test_trait_correlation_finds_condition(scored):
    mdata, ad = scored
    ad = ad.copy()
    ad.obs["depth"] = np.asarray(ad.X.sum(1)).ravel()
    ad.obs["stim"] = ad.obs["condition"] == "stim"
    res = msg.tl.module_trait_correlation(ad, ["condition", "depth", "stim"], method="spearman")
    assert set(res["trait"]) == {"condition: ctrl", "condition: stim", "depth", "stim"}
    assert len(res) == 4 * ad.obsm["module_scores"].shape[1]
    planted = mdata.uns["toy_truth"]["condition"]["module"]
    stim = res[res["trait"] == "condition: stim"].set_index("module")
    assert stim["correlation"].idxmax() == planted
    assert stim.loc[planted, "padj"] < 1e-10
    # independent formula: scipy on the same vectors, and BH by hand
    s = ad.obsm["module_scores"][planted]
    r, p = stats.spearmanr(s, ad.obs["depth"])
    row = res[(res["module"] == planted) & (res["trait"] == "depth")].iloc[0]
    np.testing.assert_allclose([row["correlation"], row["pvalue"]], [r, p])
    pv = res["pvalue"].to_numpy()
    order = np.argsort(pv)
    bh = np.minimum.accumulate((pv[order] * len(pv) / np.arange(1, len(pv) + 1))[::-1])[::-1]
    np.testing.assert_allclose(res["padj"].to_numpy()[order], np.minimum(bh, 1))
    np.testing.assert_allclose(
        stim["correlation"], res[res["trait"] == "stim"].set_index("module")["correlation"], atol=1e-12
    )
    assert ad.uns["module_scores_traits"]["table"].equals(res)


def test_trait_errors(scored):
    _, ad = scored
    ad = ad.copy()
    with pytest.raises(KeyError, match="'nope'"):
        msg.tl.module_trait_correlation(ad, ["nope"])
    with pytest.raises(KeyError, match="score_modules"):
        msg.tl.module_trait_correlation(ad, ["condition"], scores_key="x")
    ad.obs["const"] = 1.0
    with pytest.warns(UserWarning, match="'const'"):
        res = msg.tl.module_trait_correlation(ad, ["const", "condition"])
    assert "const" not in set(res["trait"])


def test_differential_activity_planted_and_permuted(scored):
    mdata, ad = scored
    planted = mdata.uns["toy_truth"]["condition"]["module"]
    res = msg.tl.differential_module_activity(ad, "condition", reference="ctrl", sample_key="sample")
    top = res.set_index("module")
    assert top["delta"].abs().idxmax() == planted
    assert top.loc[planted, "delta"] > 0.8
    assert top.loc[planted, "auc"] > 0.75
    assert top.loc[planted, "padj"] < 1e-10
    assert top.loc[planted, "padj_samples"] < 0.01
    assert (top["n_samples_group"] == 3).all()
    # per-sample means by hand, Welch t
    s = ad.obsm["module_scores"][planted].groupby(ad.obs["sample"].to_numpy()).mean()
    cond = ad.obs.groupby("sample", observed=True)["condition"].first()
    t, p = stats.ttest_ind(s[cond == "stim"], s[cond == "ctrl"], equal_var=False)
    np.testing.assert_allclose([top.loc[planted, "t_samples"], top.loc[planted, "pvalue_samples"]], [t, p])
    # permuted labels: samples shuffled between conditions (within-sample structure kept) find nothing
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(5):
        perm = ad.copy()
        lab = perm.obs["condition"].to_numpy().copy()
        perm.obs["perm"] = pd.Categorical(rng.permutation(lab))
        r = msg.tl.differential_module_activity(perm, "perm", reference="ctrl")
        hits += int((r["padj"] < 0.05).sum())
    assert hits <= 1
    assert "module_scores_condition" in ad.uns


def test_differential_errors(scored):
    _, ad = scored
    with pytest.raises(ValueError, match="several groups"):
        msg.tl.differential_module_activity(_mixed(ad), "condition", sample_key="mix")
    with pytest.raises(ValueError, match="reference='x'"):
        msg.tl.differential_module_activity(ad, "condition", reference="x")
    few = ad.copy()
    few.obs["two"] = few.obs["sample"].astype(str).str[-1].isin(["0", "1"]).map({True: "a", False: "b"})
    few.obs["s"] = np.where(few.obs["two"] == "a", "s_a", few.obs["sample"].astype(str))
    with pytest.warns(UserWarning, match="at least 2 samples"):
        res = msg.tl.differential_module_activity(few, "two", reference="b", sample_key="s")
    assert res["pvalue_samples"].isna().all()


def _mixed(ad):
    out = ad.copy()
    out.obs["mix"] = "one"
    return out


def test_integer_group_labels_and_reference(scored):
    """``reference=0`` on an integer column names the group labelled 0 (labels are compared as strings)."""
    mdata, ad = scored
    planted = mdata.uns["toy_truth"]["condition"]["module"]
    coded = ad.copy()
    coded.obs["code"] = (coded.obs["condition"].astype(str) != "ctrl").astype(int).to_numpy()
    by_code = msg.tl.differential_module_activity(coded, "code", reference=0).set_index("module")
    by_name = msg.tl.differential_module_activity(ad, "condition", reference="ctrl").set_index("module")
    np.testing.assert_allclose(by_code.loc[planted, "delta"], by_name.loc[planted, "delta"])
