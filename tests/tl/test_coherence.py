from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from musegnn_sc.tl._coherence import gene_set_coherence, gene_vectors


def _gdata(seed: int = 0, n_genes: int = 300, n_datasets: int = 3, planted: int = 20):
    """Random embeddings, except a planted set whose genes share a direction in every dataset."""
    rng = np.random.default_rng(seed)
    genes = np.array([f"G{i:03d}" for i in range(n_genes)])
    direction = rng.normal(size=16)
    base = rng.normal(size=(n_genes, 16))
    base[:planted] = direction + 0.3 * rng.normal(size=(planted, 16))
    rows, X = [], []
    for d in range(n_datasets):
        rows += [(f"d{d}", g) for g in genes]
        X.append(base * rng.uniform(0.5, 2.0, size=(n_genes, 1)) + 0.1 * rng.normal(size=(n_genes, 16)))
    obs = pd.DataFrame(rows, columns=["dataset", "gene"])
    obs.index = obs["dataset"] + ":" + obs["gene"]
    g = ad.AnnData(obs=obs)
    g.obsm["X_musegnn"] = np.vstack(X).astype(np.float32)
    return g, genes


def test_gene_vectors_one_unit_vector_per_gene():
    g, genes = _gdata()
    vec = gene_vectors(g)
    assert vec.shape == (len(genes), 16)
    np.testing.assert_allclose(np.linalg.norm(vec.to_numpy(), axis=1), 1.0, rtol=1e-6)
    assert list(vec.index) == sorted(genes)


def test_planted_set_found_random_set_not():
    g, genes = _gdata()
    sets = {
        "planted": list(genes[:20]),
        "random": list(genes[100:140]),
        "tiny": list(genes[200:203]),
        "absent": ["XYZ"] * 10,
    }
    res = gene_set_coherence(g, sets, min_size=5)
    assert set(res.index) == {"planted", "random"}  # tiny and absent fall under min_size
    assert res.loc["planted", "auroc"] > 0.99
    assert abs(res.loc["random", "auroc"] - 0.5) < 0.1
    assert res.loc["planted", "fdr"] < 1e-10
    assert res.loc["random", "fdr"] > 0.01
    assert res.loc["planted", "n_pairs"] == 20 * 19 // 2
    assert res.index[0] == "planted"
    assert res.attrs["n_genes_embedded"] == 300


def test_gmt_input_and_reproducible(tmp_path):
    g, genes = _gdata()
    p = tmp_path / "s.gmt"
    p.write_text("planted\t\t" + "\t".join(genes[:20]) + "\n")
    a = gene_set_coherence(g, p, seed=3)
    b = gene_set_coherence(g, {"planted": list(genes[:20])}, seed=3)
    pd.testing.assert_frame_equal(a, b)


def test_errors():
    g, genes = _gdata()
    with pytest.raises(KeyError, match="use_rep"):
        gene_set_coherence(g, {"s": list(genes[:10])}, use_rep="X_nope")
    with pytest.raises(ValueError, match="min_size"):
        gene_set_coherence(g, {"s": list(genes[:10])}, min_size=1)


def test_hallmark_sets_on_real_gmt(shared_data):
    g, _ = _gdata()
    # Synthetic gene names match no Hallmark gene: nothing is tested, and the result says so (empty, not an error).
    res = gene_set_coherence(g, shared_data / "genesets" / "msigdb_h.all.v7.5.1.symbols.gmt")
    assert res.empty
    assert list(res.columns)[:4] == ["n_genes", "n_found", "n_pairs", "auroc"]
