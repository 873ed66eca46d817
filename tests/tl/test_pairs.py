"""Gene-pair prediction: planted same-module pairs are found, shuffled labels are not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import musegnn_sc as msg
from musegnn_sc.io._embedding import embedding_anndata


def _planted_pairs(genes: np.ndarray, module: np.ndarray, n: int, seed: int) -> pd.DataFrame:
    """Half same-module pairs, half pairs of genes from different modules (or background)."""
    rng = np.random.default_rng(seed)
    rows = []
    in_mod = module != "none"
    mod_genes = genes[in_mod]
    mods = module[in_mod]
    while len(rows) < n // 2:
        i, j = rng.choice(len(mod_genes), 2, replace=False)
        if mods[i] == mods[j]:
            rows.append((mod_genes[i], mod_genes[j], True))
    while len(rows) < n:
        i, j = rng.choice(len(genes), 2, replace=False)
        if module[i] != module[j] or module[i] == "none":
            rows.append((genes[i], genes[j], False))
    return pd.DataFrame(rows, columns=["gene_a", "gene_b", "label"])


@pytest.fixture(scope="module")
def toy():
    gdata = msg.datasets.toy_gdata(n_modules=6, genes_per_module=15, random_state=0)
    truth = gdata.uns["toy_truth"]["modules"]
    pairs = _planted_pairs(truth["gene"].to_numpy(), truth["module"].to_numpy(), 400, seed=1)
    return gdata, pairs


def test_planted_pairs_are_predicted(toy):
    gdata, pairs = toy
    res = msg.tl.predict_gene_pairs(gdata, pairs, "label", n_splits=4)
    row = res.loc["embedding"]
    assert row["auroc"] > 0.9
    assert row["auprc"] > 0.85
    assert 0 < row["auroc_std"] < 0.1
    assert row["n_pairs"] == 400 and row["n_positive"] == 200
    assert len(res.attrs["per_fold"]) == 4
    print(res)  # attrs hold plain records: printing works


def test_shuffled_labels_score_near_chance(toy):
    gdata, pairs = toy
    shuffled = np.random.default_rng(3).permutation(pairs["label"].to_numpy())
    res = msg.tl.predict_gene_pairs(gdata, pairs[["gene_a", "gene_b"]], shuffled, n_splits=4)
    assert abs(res.loc["embedding", "auroc"] - 0.5) < 0.1


def test_sum_features_are_order_invariant(toy):
    gdata, pairs = toy
    swapped = pairs[["gene_b", "gene_a", "label"]]
    for kind in ("sum", "symmetric"):
        one = msg.tl.predict_gene_pairs(gdata, pairs, "label", pair_features=kind, n_splits=3)
        two = msg.tl.predict_gene_pairs(gdata, swapped, "label", pair_features=kind, n_splits=3)
        np.testing.assert_allclose(one["auroc"], two["auroc"])


def test_unknown_genes_are_dropped_with_a_count(toy):
    gdata, pairs = toy
    extra = pd.DataFrame({"gene_a": ["NOPE1", "GENE0000"], "gene_b": ["GENE0001", "NOPE2"], "label": [True, False]})
    with pytest.warns(UserWarning, match=r"2 of 402 pair\(s\) are dropped"):
        res = msg.tl.predict_gene_pairs(gdata, pd.concat([pairs, extra]), "label", n_splits=3)
    assert res.attrs["n_dropped"] == 2 and res.loc["embedding", "n_pairs"] == 400
    with pytest.raises(ValueError, match="binary"):
        msg.tl.predict_gene_pairs(gdata, pairs[["gene_a", "gene_b"]], np.arange(400), n_splits=3)
    with pytest.raises(ValueError, match="one label per pair"):
        msg.tl.predict_gene_pairs(gdata, pairs[["gene_a", "gene_b"]], [True, False], n_splits=3)


def test_raw_expression_baseline_finds_planted_coexpression():
    """On the count simulator, expression recovers co-expressed module pairs; an uninformative embedding does not."""
    mdata = msg.datasets.toy_mudata(
        include_mouse=False, include_atac=False, include_spatial=False, n_rna=2, n_cells=200, n_genes=200
    )
    truth = mdata.uns["toy_truth"]["genes"].drop_duplicates("gene")
    genes, module = truth["gene"].to_numpy(), truth["module"].astype(str).to_numpy()
    pairs = _planted_pairs(genes, module, 300, seed=2)
    noise = embedding_anndata(genes, np.random.default_rng(0).normal(size=(len(genes), 16)), name="noise")
    res = msg.tl.predict_gene_pairs(noise, pairs, "label", mdata=mdata, n_splits=3)
    assert res.loc["raw_expression", "auroc"] > 0.8
    assert abs(res.loc["embedding", "auroc"] - 0.5) < 0.12
