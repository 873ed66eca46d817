"""Readers and writers of gene embeddings: every format round-trips, bad files get clear errors."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pandas as pd
import pytest

import musegnn_sc as msg
from musegnn_sc._keys import EMBEDDING

FORMATS = {
    "word2vec": "emb.txt",
    "word2vec_gz": "emb.txt.gz",
    "csv": "emb.csv",
    "tsv": "emb.tsv",
    "csv_gz": "emb.csv.gz",
    "parquet": "emb.parquet",
    "pickle": "emb.pkl",
    "npz": "emb.npz",
    "h5ad": "emb.h5ad",
}


@pytest.fixture(scope="module")
def gdata():
    return msg.datasets.toy_gdata(n_modules=6, genes_per_module=10, n_dims=8, gene_sd=0.5, random_state=1)


@pytest.fixture(scope="module")
def per_gene(gdata):
    return msg.tl.aggregate_genes(gdata)


@pytest.mark.parametrize("fname", FORMATS.values(), ids=FORMATS.keys())
def test_round_trip_every_format(tmp_path, gdata, per_gene, fname):
    path = tmp_path / fname
    msg.io.write_gene_embedding(gdata, path)
    back = msg.io.read_gene_embedding(path, name="toy")
    # several rows per gene are aggregated exactly as aggregate_genes does, and written without loss
    assert back.obs["gene"].tolist() == per_gene.obs_names.tolist()
    np.testing.assert_array_equal(back.obsm[EMBEDDING], per_gene.obsm[EMBEDDING])
    np.testing.assert_array_equal(back.X, back.obsm[EMBEDDING])
    assert back.obs_names[0] == f"toy:{per_gene.obs_names[0]}"
    assert set(back.obs["dataset"]) == {"toy"}
    for col in ("gene", "dataset", "omics", "tissue", "species", "is_common"):
        assert col in back.obs
    assert back.uns["gene_embedding"]["n_dims"] == 8
    # a second round trip from the per-gene object is the identity
    path2 = tmp_path / ("again_" + fname)
    msg.io.write_gene_embedding(back, path2)
    again = msg.io.read_gene_embedding(path2, name="toy")
    np.testing.assert_array_equal(again.obsm[EMBEDDING], back.obsm[EMBEDDING])


def test_read_output_works_with_the_tools(tmp_path, gdata):
    path = tmp_path / "emb.txt"
    msg.io.write_gene_embedding(gdata, path)
    ext = msg.io.read_gene_embedding(path, name="toy")
    truth = gdata.uns["toy_truth"]["modules"]
    sets = truth.groupby("module")["gene"].apply(list).to_dict()
    coh = msg.tl.gene_set_coherence(ext, sets, min_size=3)
    assert (coh["auroc"] > 0.85).all()  # 0.5 by chance; a sixth of random pairs share a module
    sim = msg.tl.similar_genes(ext, "GENE0000", n=5)
    assert set(truth.set_index("gene").loc[sim["gene"], "module"]) == {"M0"}
    res = msg.tl.predict_gene_function(ext, sets["M0"], k=5, n_splits=3)
    assert (res["auroc"] > 0.9).all()
    msg.tl.gene_modules(ext, resolution=0.5)
    assert ext.obs["leiden"].nunique() >= 2
    ax = msg.pl.embedding(ext, color="leiden", highlight=["GENE0000"], show=False)
    assert ax is not None


def test_gene2vec_text_without_header_and_tabs(tmp_path):
    path = tmp_path / "g2v.txt"
    path.write_text("TP53\t0.1 0.2 0.3\nEGFR 1 2 3\n\nMYC -1e-3 4.5 6\n")
    g = msg.io.read_gene_embedding(path, name="gene2vec")
    assert g.obs["gene"].tolist() == ["TP53", "EGFR", "MYC"]
    np.testing.assert_allclose(g.X[2], [-1e-3, 4.5, 6], rtol=1e-6)


def test_tables_with_other_gene_columns(tmp_path):
    df = pd.DataFrame(np.arange(6.0).reshape(3, 2), index=["ENSG1", "ENSG2", "ENSG3"])
    df.to_csv(tmp_path / "a.csv")  # unnamed index column
    a = msg.io.read_gene_embedding(tmp_path / "a.csv", name="geneformer")
    assert a.obs["gene"].tolist() == ["ENSG1", "ENSG2", "ENSG3"]
    np.testing.assert_array_equal(a.X, df.to_numpy())
    # no header line: the first line is a vector
    (tmp_path / "b.tsv").write_text("A\t0.5\t0.25\nB\t1.5\t2.5\n")
    b = msg.io.read_gene_embedding(tmp_path / "b.tsv", name="x")
    assert b.obs["gene"].tolist() == ["A", "B"]
    # a named column elsewhere than first, and parquet with the gene in the index
    t = pd.DataFrame({"d0": [1.0, 2.0], "Symbol": ["A", "B"], "d1": [3.0, 4.0]})
    t.to_csv(tmp_path / "c.csv", index=False)
    c = msg.io.read_gene_embedding(tmp_path / "c.csv", name="x")
    np.testing.assert_array_equal(c.X, [[1, 3], [2, 4]])
    t.set_index("Symbol").rename_axis("gene").to_parquet(tmp_path / "d.parquet")
    d = msg.io.read_gene_embedding(tmp_path / "d.parquet", name="x")
    assert d.obs["gene"].tolist() == ["A", "B"]
    e = msg.io.read_gene_embedding(tmp_path / "c.csv", name="x", gene_column="Symbol")
    np.testing.assert_array_equal(e.X, c.X)


def test_genept_pickle_of_lists(tmp_path):
    path = tmp_path / "genept.pickle"
    with path.open("wb") as fh:
        pickle.dump({"TP53": [0.1, 0.2], "EGFR": [0.3, 0.4]}, fh)
    g = msg.io.read_gene_embedding(path, name="genept")
    assert g.obs_names.tolist() == ["genept:TP53", "genept:EGFR"]
    np.testing.assert_allclose(g.X, [[0.1, 0.2], [0.3, 0.4]], rtol=1e-6)


@pytest.mark.parametrize(
    ("fname", "content", "match"),
    [
        ("bad.txt", "A 1 2 3\nB 1 2\n", "ragged"),
        ("bad2.txt", "A 1 2\nB 1 x\n", r"bad2.txt:2: value 'x' is not a number"),
        ("bad3.txt", "3 2\nA 1 2\nB 1 2\n", "header says 3 genes"),
        ("bad4.txt", "A 1 2\nA 3 4\n", "occur more than once"),
        ("empty.txt", "", "empty"),
        ("blank.txt", "\n\n", "empty"),
        ("bad.csv", "gene,0,1\nA,1,2\nB,3,oops\n", "column '1' is not numeric"),
        ("nan.csv", "gene,0,1\nA,1,2\nB,3,\n", "missing or infinite"),
        ("onlygene.csv", "gene\nA\nB\n", "no value columns"),
        ("bad.xyz", "A 1 2\n", "Cannot tell the format"),
    ],
)
def test_bad_files(tmp_path, fname, content, match):
    path = tmp_path / fname
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        msg.io.read_gene_embedding(path, name="x")


def test_ragged_pickle_and_missing_file(tmp_path):
    path = tmp_path / "r.pkl"
    with path.open("wb") as fh:
        pickle.dump({"A": [1.0, 2.0], "B": [1.0]}, fh)
    with pytest.raises(ValueError, match="ragged"):
        msg.io.read_gene_embedding(path, name="x")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        msg.io.read_gene_embedding(tmp_path / "nope.txt", name="x")
    with pytest.raises(ValueError, match="`name`"):
        msg.io.read_gene_embedding(path, name="")


def test_duplicate_rules(tmp_path):
    path = tmp_path / "dup.txt"
    path.write_text("A 1 2\nB 5 5\nA 3 4\n")
    with pytest.warns(UserWarning, match="1 gene"):
        first = msg.io.read_gene_embedding(path, name="x", duplicates="first")
    np.testing.assert_array_equal(first.X, [[1, 2], [5, 5]])
    with pytest.warns(UserWarning, match="mean vector"):
        mean = msg.io.read_gene_embedding(path, name="x", duplicates="mean")
    np.testing.assert_array_equal(mean.X, [[2, 3], [5, 5]])
    assert mean.uns["gene_embedding"]["n_duplicates"] == 1


def test_write_refuses_to_overwrite_and_is_atomic(tmp_path, gdata):
    path = tmp_path / "emb.csv"
    path.write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        msg.io.write_gene_embedding(gdata, path)
    assert path.read_text() == "keep me"
    msg.io.write_gene_embedding(gdata, path, overwrite=True)
    assert path.read_text().startswith("gene,0,1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.csv"]  # no temporary file left
    with pytest.raises(ValueError, match="Cannot tell the format"):
        msg.io.write_gene_embedding(gdata, tmp_path / "emb.json")
    with pytest.raises(KeyError, match="X_other"):
        msg.io.write_gene_embedding(gdata, tmp_path / "e.txt", use_rep="X_other")


def test_write_word2vec_layout_and_bad_names(tmp_path, per_gene):
    path = tmp_path / "e.txt.gz"
    msg.io.write_gene_embedding(per_gene, path)
    with gzip.open(path, "rt") as fh:
        lines = fh.read().splitlines()
    assert lines[0] == f"{per_gene.n_obs} 8"
    assert lines[1].split()[0] == per_gene.obs_names[0]
    bad = per_gene.copy()
    bad.obs_names = ["A B", *bad.obs_names[1:]]
    with pytest.raises(ValueError, match="whitespace"):
        msg.io.write_gene_embedding(bad, tmp_path / "bad.txt")
    assert not (tmp_path / "bad.txt").exists()
