from __future__ import annotations

import pytest

from musegnn_sc._genesets import as_gene_sets, read_gmt


def test_read_gmt_enrichr_and_msigdb_layouts(tmp_path):
    p = tmp_path / "sets.gmt"
    p.write_text(
        "SET_A\thttp://x\tTP53\tMDM2\tTP53\t\n"  # duplicate gene, trailing tab
        "\n"
        "'De Novo' set (GO:1)\t\tATIC\tPAICS\r\n"  # Enrichr: empty description, CRLF
        "SET_A\t\tCDKN1A\n"  # repeated name: union
    )
    sets = read_gmt(p)
    assert sets == {"SET_A": ["TP53", "MDM2", "CDKN1A"], "'De Novo' set (GO:1)": ["ATIC", "PAICS"]}


def test_read_gmt_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="dict of gene lists"):
        read_gmt(tmp_path / "missing.gmt")
    bad = tmp_path / "bad.gmt"
    bad.write_text("ONLY_NAME TP53 MDM2\n")  # spaces, not tabs
    with pytest.raises(ValueError, match="bad.gmt:1"):
        read_gmt(bad)


def test_as_gene_sets_accepts_mapping_and_rejects_strings():
    assert as_gene_sets({"s": ("A", "B", "A")}) == {"s": ["A", "B"]}
    with pytest.raises(TypeError, match="single string"):
        as_gene_sets({"s": "ABC"})
    with pytest.raises(TypeError, match="GMT file path"):
        as_gene_sets(3)


def test_read_real_gmt_files(shared_data):
    hallmark = read_gmt(shared_data / "genesets" / "msigdb_h.all.v7.5.1.symbols.gmt")
    assert len(hallmark) == 50
    assert "JUNB" in hallmark["HALLMARK_TNFA_SIGNALING_VIA_NFKB"]
    go = read_gmt(shared_data / "genesets" / "enrichr_GO_Biological_Process_2023.gmt")
    assert len(go) == 5407
    assert go["'De Novo' AMP Biosynthetic Process (GO:0044208)"][:2] == ["ATIC", "PAICS"]
