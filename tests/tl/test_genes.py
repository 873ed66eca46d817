import anndata as ad
import numpy as np
import pandas as pd
import pytest

from musegnn_sc.tl._genes import aggregate_genes, similar_genes


@pytest.fixture
def gdata():
    """Per-dataset gene rows: A and B point the same way in both datasets, C opposite, D only in d2."""
    rows = [
        ("d1", "A", [1.0, 0.0, 0.0]),
        ("d1", "B", [0.9, 0.1, 0.0]),
        ("d1", "C", [-1.0, 0.0, 0.0]),
        ("d2", "A", [2.0, 0.2, 0.0]),  # longer vector: averaging must not weight it more
        ("d2", "B", [1.0, 0.0, 0.1]),
        ("d2", "C", [-1.0, 0.1, 0.0]),
        ("d2", "D", [0.0, 0.0, 1.0]),
    ]
    obs = pd.DataFrame({"dataset": [r[0] for r in rows], "gene": [r[1] for r in rows]})
    obs["omics"] = "rna"
    obs.index = obs["dataset"] + ":" + obs["gene"]
    X = np.array([r[2] for r in rows], dtype=np.float32)
    g = ad.AnnData(X=X.copy(), obs=obs)
    g.obsm["X_musegnn"] = X
    return g


def _unit(v):
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def test_aggregate_genes_averages_unit_rows_per_gene(gdata):
    agg = aggregate_genes(gdata)
    assert list(agg.obs_names) == ["A", "B", "C", "D"]
    assert agg.obs["n_datasets"].tolist() == [2, 2, 2, 1]
    assert agg.obs["datasets"].tolist() == ["d1;d2", "d1;d2", "d1;d2", "d2"]
    expected_a = (_unit([1, 0, 0]) + _unit([2, 0.2, 0])) / 2
    np.testing.assert_allclose(agg.obsm["X_musegnn"][0], expected_a, rtol=1e-6)
    np.testing.assert_allclose(agg.X, agg.obsm["X_musegnn"])
    raw = aggregate_genes(gdata, normalize=False)
    np.testing.assert_allclose(raw.obsm["X_musegnn"][0], [1.5, 0.1, 0.0], rtol=1e-6)


def test_similar_genes_ranks_by_cosine(gdata):
    top = similar_genes(gdata, "A", n=3)
    assert top["gene"].tolist() == ["B", "D", "C"]
    agg = aggregate_genes(gdata).obsm["X_musegnn"]
    np.testing.assert_allclose(top["cosine"].iloc[0], _unit(agg[0]) @ _unit(agg[1]), rtol=1e-6)
    assert top["cosine"].is_monotonic_decreasing
    assert "A" not in top["gene"].tolist()
    assert similar_genes(aggregate_genes(gdata), "A", n=1)["gene"].tolist() == ["B"]


def test_similar_genes_within_a_dataset_lists_the_same_gene_elsewhere(gdata):
    top = similar_genes(gdata, "A", n=6, dataset="d1")
    assert list(top.columns) == ["gene", "dataset", "cosine"]
    assert (top["gene"].iloc[0], top["dataset"].iloc[0]) == ("A", "d2")
    assert len(top) == 6


def test_similar_genes_errors_name_the_fix(gdata):
    with pytest.raises(KeyError, match="did you mean"):
        similar_genes(gdata, "a")
    with pytest.raises(KeyError, match="it is in: d2"):
        similar_genes(gdata, "D", dataset="d1")
    with pytest.raises(KeyError, match="train_musegnn"):
        similar_genes(gdata, "A", use_rep="X_pca")
    with pytest.raises(ValueError, match="n"):
        similar_genes(gdata, "A", n=0)
