"""`gene_symbols=`: a dataset keyed by IDs trains jointly with a symbol-named one, matched by symbol."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import musegnn_sc as msg
from musegnn_sc._symbols import var_positions


def _toy():
    return msg.datasets.toy_mudata(
        include_mouse=False, include_atac=False, include_spatial=False, n_rna=2, n_cells=120, n_genes=200
    )


def _to_ids(adata):
    """Made-up IDs in var_names, the symbols in var['symbol']; one symbol missing, one carried by two IDs."""
    symbols = adata.var_names.to_numpy().astype(object)
    sums = np.asarray(adata.X.sum(axis=0)).ravel()
    order = np.argsort(-sums)
    top, second, third = order[:3]
    symbols = symbols.copy()
    symbols[second] = symbols[top]  # two IDs, one symbol: the one with more counts (`top`) is kept
    symbols[third] = np.nan
    adata.var["symbol"] = symbols
    adata.var_names = [f"ENSG{k:011d}" for k in range(adata.n_vars)]
    return top, second, third


@pytest.fixture(scope="module")
def trained():
    import torch

    torch.set_num_threads(1)
    mdata = _toy()
    plain = _toy()
    ids = mdata.mod["rna_heart_2"]
    top, second, third = _to_ids(ids)
    with pytest.warns(UserWarning, match=r"1 gene\(s\) have no symbol.*1 symbol\(s\) are carried by several IDs"):
        msg.pp.build_coexpression_graphs(mdata, n_top_genes=100, gene_symbols={"rna_heart_2": "symbol"})
    msg.pp.build_coexpression_graphs(plain, n_top_genes=100)
    gdata, model = msg.tl.train_musegnn(mdata, max_epochs=3, progress_bar=False, return_model=True)
    return mdata, plain, gdata, model, (top, second, third)


def test_graph_records_symbols_and_applies_the_rule(trained):
    mdata, _, _, _, (top, second, third) = trained
    ids = mdata.mod["rna_heart_2"]
    assert ids.uns["coexpression"]["gene_symbols"] == "symbol"
    assert ids.uns["coexpression"]["params"]["gene_symbols"] == "symbol"
    nodes = ids.var["coexpression_gene"].to_numpy()
    assert nodes.sum() == 100
    assert not nodes[second] and not nodes[third]  # the less expressed duplicate and the gene without symbol
    assert "gene_symbols" not in mdata.mod["rna_heart_1"].uns["coexpression"]


def test_datasets_share_anchors_by_symbol(trained):
    mdata, plain, gdata, model, _ = trained
    a, b = model.graphs
    assert b.gene_ids is not None and a.gene_ids is None
    common = set(a.genes) & set(b.genes)
    plain_common = set(plain.mod["rna_heart_1"].var_names[plain.mod["rna_heart_1"].var["coexpression_gene"]]) & set(
        plain.mod["rna_heart_2"].var_names[plain.mod["rna_heart_2"].var["coexpression_gene"]]
    )
    # the same anchors as when both datasets are named by symbol (up to the two genes the rule removed)
    assert len(common) >= len(plain_common) - 2 > 20
    rows = gdata[gdata.obs["dataset"] == "rna_heart_2"].obs
    assert rows["gene_id"].str.startswith("ENSG").all()
    assert not rows["gene"].str.startswith("ENSG").any()
    ids = mdata.mod["rna_heart_2"]
    pd.testing.assert_series_equal(
        ids.var.loc[rows["gene_id"], "symbol"].astype(str),
        rows["gene"].astype(str),
        check_names=False,
        check_index=False,
    )
    first = gdata[gdata.obs["dataset"] == "rna_heart_1"].obs
    assert (first["gene_id"] == first["gene"]).all()
    assert gdata.obs.loc[gdata.obs["gene"].isin(common), "is_common"].all()
    # the evaluation finds each dataset's nodes by symbol
    scores = msg.tl.evaluate(gdata, mdata, metrics=("AUC", "NO"))
    assert np.isfinite(scores).all()
    # and the raw-expression features find the columns of the ID-keyed dataset
    genes = rows["gene"].to_numpy()[:5]
    pos = var_positions(ids, genes)
    assert (ids.var["symbol"].to_numpy()[pos] == genes).all()


def test_model_save_load_keeps_ids(trained, tmp_path):
    from musegnn_sc.model import MuSeGNN

    _, _, gdata, model, _ = trained
    model.save(tmp_path / "m")
    again = MuSeGNN.load(tmp_path / "m")
    np.testing.assert_array_equal(again.graphs[1].gene_ids, model.graphs[1].gene_ids)
    assert "gene_id" in again.get_gene_embeddings().obs


def test_symbol_errors_and_given_genes():
    mdata = _toy()
    a = mdata.mod["rna_heart_2"]
    _to_ids(a)
    with pytest.raises(KeyError, match="is not a column"):
        msg.pp.build_coexpression_graph(a, gene_symbols="feature_name")
    genes = a.var["symbol"].dropna().unique()[:30].tolist()
    with pytest.warns(UserWarning, match="no symbol"):
        out = msg.pp.build_coexpression_graph(a, genes=genes, gene_symbols="symbol", copy=True)
    assert sorted(out.var.loc[out.var["coexpression_gene"], "symbol"]) == sorted(genes)
