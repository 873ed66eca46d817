from __future__ import annotations

from math import comb

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from musegnn_sc.datasets import toy_gdata
from musegnn_sc.tl._enrichment import as_gene_sets, benjamini_hochberg, enrichment, hypergeometric_enrichment


@pytest.fixture(scope="module")
def gdata():
    g = toy_gdata(random_state=2)
    g.obs["leiden"] = g.obs["true_module"]
    return g


@pytest.fixture(scope="module")
def gene_sets(gdata):
    rng = np.random.default_rng(0)
    genes = np.unique(gdata.obs["gene"].astype(str))
    m2 = gdata.uns["toy_truth"]["modules"].query("module == 'M2'")["gene"].to_numpy()
    sets = {f"random_{i}": rng.choice(genes, 20, replace=False).tolist() for i in range(40)}
    # 15 of the 30 M2 genes plus 5 others
    sets["planted"] = rng.choice(m2, 15, replace=False).tolist() + rng.choice(np.setdiff1d(genes, m2), 5).tolist()
    return sets


def test_planted_set_found_random_sets_not(gdata, gene_sets):
    res = enrichment(gdata, gene_sets, min_size=5)
    top = res[res["module"] == "M2"].iloc[0]
    assert top["term"] == "planted"
    assert top["fdr"] < 0.05
    assert top["n_overlap"] == 15 and top["n_module"] == 30 and top["n_term"] == 20 and top["n_background"] == 180
    sig = res[res["fdr"] < 0.05]
    assert sig["term"].tolist() == ["planted"], sig
    assert set(res.columns) >= {"gene_ratio", "background_ratio", "fold_enrichment", "pval", "genes"}
    assert top["gene_ratio"] == pytest.approx(0.5)
    assert top["fold_enrichment"] == pytest.approx(0.5 / (20 / 180))
    assert len(top["genes"].split(";")) == 15


def test_pvalue_matches_hypergeometric_sum():
    # M=20 background genes, module of N=6, set of n=5, overlap k=3
    bg = [f"g{i}" for i in range(20)]
    modules = {"m": bg[:6]}
    sets = {"s": bg[3:8]}
    res = hypergeometric_enrichment(modules, sets, bg, min_size=1)
    M, n, N, k = 20, 5, 6, 3
    expected = sum(comb(n, i) * comb(M - n, N - i) for i in range(k, min(n, N) + 1)) / comb(M, N)
    assert res["pval"].iloc[0] == pytest.approx(expected, rel=1e-12)
    assert res["n_overlap"].iloc[0] == k


def test_benjamini_hochberg_matches_scipy():
    p = np.random.default_rng(3).uniform(size=200) ** 3
    np.testing.assert_allclose(benjamini_hochberg(p), stats.false_discovery_control(p, method="bh"))
    with_nan = benjamini_hochberg(np.array([0.01, np.nan, 0.04]))
    assert np.isnan(with_nan[1])
    np.testing.assert_allclose(with_nan[[0, 2]], [0.02, 0.04])


def _bh_with_untested_ones(pvals, n_tests):
    # pairs without overlap (p = 1) are left out of the table but count as tests
    full = np.concatenate([pvals, np.ones(n_tests - pvals.size)])
    return stats.false_discovery_control(full, method="bh")[: pvals.size]


def test_fdr_scope(gdata, gene_sets):
    n_sets, n_modules = len(gene_sets), 6
    per_module = enrichment(gdata, gene_sets, fdr_by="module")
    for _, sub in per_module.groupby("module", observed=True):
        np.testing.assert_allclose(sub["fdr"], _bh_with_untested_ones(sub["pval"].to_numpy(), n_sets))
    overall = enrichment(gdata, gene_sets, fdr_by="all")
    np.testing.assert_allclose(overall["fdr"], _bh_with_untested_ones(overall["pval"].to_numpy(), n_sets * n_modules))
    np.testing.assert_allclose(per_module["pval"], overall["pval"])


def test_inputs_gmt_table_and_dict_agree(gdata, gene_sets, tmp_path):
    path = tmp_path / "sets.gmt"
    path.write_text("".join(f"{k}\tdesc\t" + "\t".join(v) + "\n" for k, v in gene_sets.items()))
    long = pd.DataFrame([(k, g) for k, v in gene_sets.items() for g in v], columns=["source", "target"])
    ref = enrichment(gdata, gene_sets)
    for sets in (path, str(path), long):
        res = enrichment(gdata, sets)
        pd.testing.assert_frame_equal(
            res.sort_values(["module", "term"]).reset_index(drop=True),
            ref.sort_values(["module", "term"]).reset_index(drop=True),
        )


def test_size_filters_background_and_groups(gdata, gene_sets):
    sets = dict(gene_sets, tiny=["GENE0000", "GENE0001", "NOT_EMBEDDED1", "NOT_EMBEDDED2"])
    res = enrichment(gdata, sets, min_size=3)
    # two of the four genes are outside the embedded background: the set is too small to test
    assert "tiny" not in set(res["term"])
    assert set(enrichment(gdata, sets, max_size=10)["term"]) == set()
    sub = enrichment(gdata, gene_sets, groups=["M2"])
    assert set(sub["module"].astype(str)) == {"M2"}
    small_bg = gdata.obs["gene"].astype(str).unique()[:90]
    res_bg = enrichment(gdata, gene_sets, background=small_bg, min_size=1)
    assert (res_bg["n_background"] == 90).all()


def test_errors(gdata):
    with pytest.raises(KeyError, match="gene_modules"):
        enrichment(gdata, {"a": ["GENE0001"]}, groupby="nope")
    with pytest.raises(TypeError, match="list of gene symbols"):
        as_gene_sets({"a": "GENE0001"})
    with pytest.raises(FileNotFoundError):
        as_gene_sets("/nonexistent/file.gmt")
    with pytest.raises(ValueError, match="not in"):
        enrichment(gdata, {"a": ["GENE0001"]}, groups=["M99"])


def test_real_gmt_reads(shared_data):
    sets = as_gene_sets(shared_data / "genesets" / "msigdb_h.all.v7.5.1.symbols.gmt")
    assert len(sets) == 50
    assert "ISG15" in sets["HALLMARK_INTERFERON_ALPHA_RESPONSE"]
    go = as_gene_sets(shared_data / "genesets" / "enrichr_GO_Biological_Process_2023.gmt")
    assert len(go) == 5407
