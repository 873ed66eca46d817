from __future__ import annotations

import warnings

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from musegnn_sc.tl._function import predict_gene_function


def _data(seed: int = 0, n_genes: int = 120, n_cells: int = 80, informative_expression: bool = False):
    """Two datasets; gene class A vs B is planted in the embedding (and optionally in expression)."""
    rng = np.random.default_rng(seed)
    genes = np.array([f"G{i:03d}" for i in range(n_genes)])
    cls = np.where(np.arange(n_genes) < n_genes // 3, "A", "B")
    centre = {"A": rng.normal(size=8) * 3, "B": rng.normal(size=8) * 3}
    rows, X, mods = [], [], {}
    for d in ("d0", "d1"):
        rows += [(d, g) for g in genes]
        X.append(np.stack([centre[c] for c in cls]) + rng.normal(size=(n_genes, 8)))
        mu = rng.gamma(2.0, 1.0, size=(n_cells, n_genes))
        if informative_expression:
            factor = rng.gamma(2.0, 1.0, size=(n_cells, 1))
            mu[:, cls == "A"] *= factor * 3
        counts = rng.poisson(mu).astype(np.float32)
        mods[d] = ad.AnnData(
            X=sparse.csr_matrix(counts),
            var=pd.DataFrame(index=genes),
            obs=pd.DataFrame(index=[f"{d}_{i}" for i in range(n_cells)]),
        )
    obs = pd.DataFrame(rows, columns=["dataset", "gene"])
    obs.index = obs["dataset"] + ":" + obs["gene"]
    g = ad.AnnData(obs=obs)
    g.obsm["X_musegnn"] = np.vstack(X).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mdata = md.MuData(mods, axis=1)
    return g, mdata, pd.Series(cls, index=genes)


def test_planted_labels_predicted_and_raw_baseline_uninformative():
    g, mdata, labels = _data()
    res = predict_gene_function(g, labels, mdata=mdata, k=5)
    assert set(res["features"]) == {"embedding", "raw_expression", "embedding_gene_mean"}
    emb = res[res.features == "embedding"]
    raw = res[res.features == "raw_expression"]
    assert (emb["accuracy"] > 0.95).all()
    assert (emb["auroc"] > 0.95).all()
    # Expression carries no class signal here: chance level, as the majority-class floor says.
    assert (raw["auroc"] < 0.75).all()
    assert (res["n_genes"].iloc[:4] == 120).all()
    assert res["majority_accuracy"].iloc[0] == pytest.approx(80 / 120)
    assert set(res.attrs["summary"].index) == {"embedding", "raw_expression", "embedding_gene_mean"}


def test_raw_baseline_finds_expression_signal():
    g, mdata, labels = _data(informative_expression=True)
    g.obsm["X_musegnn"] = np.random.default_rng(1).normal(size=g.obsm["X_musegnn"].shape).astype(np.float32)
    res = predict_gene_function(g, labels, mdata=mdata, k=5)
    assert (res[res.features == "raw_expression"]["auroc"] > 0.9).all()
    assert (res[res.features == "embedding"]["auroc"] < 0.75).all()


def test_positive_gene_list_and_file(tmp_path):
    g, _, labels = _data()
    positives = list(labels.index[labels == "A"])
    a = predict_gene_function(g, positives, k=5, seed=1)
    p = tmp_path / "pos.txt"
    p.write_text("# positives\n" + "\n".join(positives) + "\n")
    b = predict_gene_function(g, p, k=5, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert (a["auroc"] > 0.95).all()
    assert "raw_expression" not in set(a["features"])


def test_multiclass_and_small_classes_dropped():
    g, _, labels = _data()
    lab = labels.copy()
    lab.iloc[40:80] = "C"
    lab.iloc[-3:] = "rare"  # fewer than n_splits genes: dropped
    res = predict_gene_function(g, lab.to_dict(), k=5)
    assert (res["n_classes"] == 3).all()
    assert (res["n_genes"] == 117).all()


def test_errors():
    g, _, labels = _data()
    with pytest.raises(ValueError, match="two classes"):
        predict_gene_function(g, pd.Series(["A"] * 3, index=["X1", "X2", "X3"]))
    with pytest.raises(KeyError, match="use_rep"):
        predict_gene_function(g, labels, use_rep="nope")
    with pytest.raises(FileNotFoundError):
        predict_gene_function(g, "/nonexistent/labels.txt")
