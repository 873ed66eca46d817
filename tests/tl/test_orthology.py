from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from musegnn_sc.datasets import toy_gdata
from musegnn_sc.tl._orthology import orthology_score, orthology_table

DATASETS = (
    ("human_1", "rna", "heart", "human", "none"),
    ("human_2", "rna", "heart", "human", "none"),
    ("mouse_1", "rna", "heart", "mouse", "none"),
)


@pytest.fixture(scope="module")
def gdata():
    return toy_gdata(datasets=DATASETS, random_state=5)


@pytest.fixture(scope="module")
def table():
    n = 180
    return pd.DataFrame(
        {"Gene name": [f"GENE{i:04d}" for i in range(n)], "Mouse gene name": [f"Gene{i:04d}" for i in range(n)]}
    )


def test_planted_modules_keep_orthologues_together(gdata, table):
    res = orthology_score(gdata, table, groupby="true_module")
    assert list(res.index) == ["M0", "M1", "M2", "M3", "M4", "M5", "all"]
    # every gene has its orthologue in the same planted module: 180 genes x 2 human copies x 1 mouse copy
    assert res.loc["all", "n_pairs"] == 360 and res.loc["all", "n_same"] == 360
    assert res.loc["all", "fraction"] == 1.0
    assert res.loc["all", "expected"] == pytest.approx(1 / 6)
    assert (res["enrichment"].iloc[:-1] > 5).all()


def test_random_modules_match_expectation(gdata, table):
    g = gdata.copy()
    g.obs["random"] = pd.Categorical(np.random.default_rng(0).choice(list("abcdef"), g.n_obs))
    res = orthology_score(g, table, groupby="random")
    assert res.loc["all", "fraction"] == pytest.approx(res.loc["all", "expected"], abs=0.06)
    assert 0.6 < res.loc["all", "enrichment"] < 1.4


def test_renamed_symbols_need_no_table(gdata, table):
    g = gdata.copy()
    is_mouse = g.obs["species"] == "mouse"
    g.obs["gene"] = np.where(is_mouse, g.obs["gene"].str.upper(), g.obs["gene"])
    pd.testing.assert_frame_equal(
        orthology_score(g, groupby="true_module"), orthology_score(gdata, table, groupby="true_module")
    )
    with pytest.raises(ValueError, match="No orthologous pair"):
        orthology_score(gdata, groupby="true_module")


def test_orthology_table_by_hand():
    pairs = pd.DataFrame({"gene": list("wxyz"), "module_a": list("aabb"), "module_b": list("abbb")})
    res = orthology_table(pairs, ["a", "b"])
    # module a: pairs touching it w, x (2), both in a: w (1); module b: x, y, z touch it, y and z inside
    assert res.loc["a", ["n_pairs", "n_same"]].tolist() == [2, 1]
    assert res.loc["b", ["n_pairs", "n_same"]].tolist() == [3, 2]
    assert res.loc["all", "fraction"] == 0.75
    # p_a = (1/2, 1/2), p_b = (1/4, 3/4)
    assert res.loc["all", "expected"] == pytest.approx(0.5 * 0.25 + 0.5 * 0.75)
    assert res.loc["a", "expected"] == pytest.approx(0.125 / (0.5 + 0.25 - 0.125))


def test_errors(gdata, table):
    with pytest.raises(ValueError, match="lemur"):
        orthology_score(gdata, table, groupby="true_module", species=("human", "lemur"))
    with pytest.raises(KeyError, match="gene_modules"):
        orthology_score(gdata, table)
