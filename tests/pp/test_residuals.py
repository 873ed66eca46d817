from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import sparse

from musegnn_sc.pp._residuals import residual_features, residual_variances, select_highly_variable


def _counts(n_cells: int, n_genes: int, seed: int = 0, n_zero_genes: int = 3) -> np.ndarray:
    """Overdispersed counts with varying depth, a few highly variable genes and some genes without counts."""
    rng = np.random.default_rng(seed)
    depth = rng.lognormal(7, 0.6, n_cells)
    base = rng.gamma(0.6, 1.0, n_genes)
    base[:10] = np.quantile(base, 0.7)
    base /= base.sum()
    # Two groups of cells with different programmes make some genes genuinely variable.
    group = rng.random(n_cells) < 0.3
    fold = np.ones((n_cells, n_genes))
    fold[np.ix_(group, np.arange(10))] = 8.0
    mu = np.outer(depth, base) * fold * rng.gamma(4.0, 0.25, (n_cells, n_genes))
    X = rng.poisson(mu).astype(np.float64)
    X[:, n_genes - n_zero_genes :] = 0
    return X


def _reference_residuals(X: np.ndarray, theta: float, clip: float) -> np.ndarray:
    """The published formula on the whole dense matrix (cells x genes), 0 where the expectation is 0."""
    depth = X.sum(axis=1)
    gene_sums = X.sum(axis=0)
    mu = np.outer(depth, gene_sums) / X.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (X - mu) / np.sqrt(mu + mu**2 / theta)
    r[mu == 0] = 0.0
    return np.clip(r, -clip, clip)


@pytest.fixture(scope="module")
def counts() -> np.ndarray:
    return _counts(400, 150)


@pytest.mark.parametrize(("theta", "clip"), [(100.0, None), (10.0, 4.0)])
def test_residual_variances_match_scanpy(counts, theta, clip):
    import anndata as ad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import scanpy as sc

    adata = ad.AnnData(sparse.csr_matrix(counts))
    n_top = 40
    sc.experimental.pp.highly_variable_genes(
        adata, flavor="pearson_residuals", n_top_genes=n_top, theta=theta, clip=clip
    )
    ref = adata.var["residual_variances"].to_numpy()

    ours = residual_variances(sparse.csr_matrix(counts), theta=theta, clip=clip, chunk_size=64)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-12)

    sel = select_highly_variable(counts, n_top_genes=n_top, theta=theta, clip=clip)
    assert set(sel.indices) == set(np.flatnonzero(adata.var["highly_variable"]))
    np.testing.assert_array_equal(sel.ranks, adata.var["highly_variable_rank"].to_numpy())
    # Genes of the planted programme have the largest residual variances.
    assert set(range(10)) <= set(sel.indices[:20])


def test_residual_variances_formula_chunks_and_formats(counts):
    ref = _reference_residuals(counts, 100.0, np.sqrt(counts.shape[0])).var(axis=0)
    dense = residual_variances(counts)
    np.testing.assert_allclose(dense, ref, rtol=1e-10, atol=1e-14)
    for chunk in (1, 7, 1000):
        np.testing.assert_allclose(residual_variances(counts, chunk_size=chunk), dense, rtol=1e-12, atol=1e-14)
    for fmt in (sparse.csr_matrix, sparse.csc_matrix):
        np.testing.assert_allclose(residual_variances(fmt(counts), chunk_size=33), dense, rtol=1e-12, atol=1e-14)
    # Genes without counts have variance 0 (not NaN).
    assert np.all(dense[-3:] == 0)


def test_rows_mask_equals_subsetting(counts):
    X = counts.copy()
    rows = np.ones(len(X), dtype=bool)
    rows[::5] = False
    X[::5] *= 3  # rows outside the mask must not matter
    sub = counts[rows]
    np.testing.assert_allclose(residual_variances(X, rows=rows, chunk_size=50), residual_variances(sub), rtol=1e-12)
    cols = np.arange(20)
    np.testing.assert_allclose(
        residual_features(X, cols, rows=rows, n_components=None, chunk_size=50),
        residual_features(sub, cols, n_components=None),
        rtol=1e-12,
        atol=1e-12,
    )


def test_zero_depth_cells_give_finite_residuals(counts):
    X = counts.copy()
    X[:4] = 0
    v = residual_variances(X)
    assert np.isfinite(v).all()
    prof = residual_features(X, np.arange(10), n_components=None, center=False)
    assert np.all(prof[:, :4] == 0)


def test_select_highly_variable_order_and_zero_genes(counts):
    sel = select_highly_variable(sparse.csr_matrix(counts), n_top_genes=25, chunk_size=17)
    assert len(sel.indices) == 25
    assert np.all(np.diff(sel.scores[sel.indices]) <= 0)
    np.testing.assert_array_equal(sel.ranks[sel.indices], np.arange(25))
    assert np.isnan(np.delete(sel.ranks, sel.indices)).all()


def test_select_highly_variable_fewer_expressed_genes_warns():
    X = _counts(100, 30, seed=3, n_zero_genes=10)
    with pytest.warns(UserWarning, match=r"Only 20 gene\(s\) have nonzero counts.*n_top_genes=50.*all 20") as rec:
        sel = select_highly_variable(X, n_top_genes=50)
    assert "n_top_genes=20" in str(rec[0].message)
    assert sorted(sel.indices) == list(range(20))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        select_highly_variable(X, n_top_genes=20)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"theta": 0.0}, "theta"),
        ({"clip": -1.0}, "clip"),
        ({"n_top_genes": 0}, "n_top_genes"),
        ({"n_top_genes": 2.5}, "n_top_genes"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_selection_bad_arguments(counts, kwargs, match):
    kwargs = {"n_top_genes": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        select_highly_variable(counts, **kwargs)


def _centred_profiles(X, cols, clip):
    r = _reference_residuals(X, 100.0, clip)[:, cols]
    return (r - r.mean(axis=0)).T


def test_features_full_profile_matches_formula(counts):
    cols = np.array([3, 0, 50, 7, 120])
    n = counts.shape[0]
    for clip, value in [("sctransform", np.sqrt(n / 30)), (None, np.sqrt(n)), (2.5, 2.5)]:
        prof = residual_features(sparse.csr_matrix(counts), cols, clip=clip, n_components=None, chunk_size=37)
        np.testing.assert_allclose(prof, _centred_profiles(counts, cols, value), rtol=1e-10, atol=1e-12)
        raw = residual_features(counts, cols, clip=clip, center=False, n_components=None)
        assert raw.max() <= value + 1e-12
        assert raw.min() >= -value - 1e-12
        np.testing.assert_allclose(prof.mean(axis=1), 0, atol=1e-12)
    # The SCTransform clip binds on this data: the planted genes hit it.
    raw = residual_features(counts, cols, clip="sctransform", center=False, n_components=None)
    assert np.isclose(raw.max(), np.sqrt(n / 30))


def test_features_keep_gene_inner_products_exactly_when_width_exceeds_rank():
    X = _counts(60, 50, seed=1, n_zero_genes=0)
    cols = np.arange(40)
    G = _centred_profiles(X, cols, np.sqrt(60 / 30))
    feats = residual_features(X, cols, n_components=128, chunk_size=13)
    assert feats.shape == (40, 128)
    np.testing.assert_allclose(feats @ feats.T, G @ G.T, rtol=1e-9, atol=1e-9 * np.abs(G @ G.T).max())
    assert np.all(feats[:, 40:] == 0)


def test_features_with_few_cells_are_padded_to_the_width():
    X = _counts(12, 40, seed=2, n_zero_genes=0)
    cols = np.arange(30)
    feats = residual_features(X, cols, n_components=64)
    assert feats.shape == (30, 64)
    # Centred profiles over 12 cells have rank at most 11: the rest is zero padding.
    assert np.count_nonzero(np.abs(feats).sum(axis=0)) <= 11
    G = _centred_profiles(X, cols, np.sqrt(12 / 30))
    np.testing.assert_allclose(feats @ feats.T, G @ G.T, atol=1e-9 * np.abs(G @ G.T).max())


def test_features_are_the_best_rank_k_approximation(counts):
    cols = np.arange(60)
    k = 6
    G = _centred_profiles(counts, cols, np.sqrt(counts.shape[0] / 30))
    # Independent route: the SVD of the profile matrix itself, not an eigendecomposition of its Gram matrix.
    U, s, _ = np.linalg.svd(G, full_matrices=False)
    assert s[k - 1] > s[k] * 1.01  # a spectral gap, so the rank-k truncation is unique
    best = (U[:, :k] * s[:k] ** 2) @ U[:, :k].T
    feats = residual_features(counts, cols, n_components=k)
    assert feats.shape == (60, k)
    np.testing.assert_allclose(feats @ feats.T, best, atol=1e-8 * s[0] ** 2)
    err = np.linalg.norm(G @ G.T - feats @ feats.T)
    np.testing.assert_allclose(err, np.sqrt(np.sum(s[k:] ** 4)), rtol=1e-8)


def test_features_deterministic_across_chunks_formats_and_signs(counts):
    cols = np.arange(0, 150, 4)
    ref = residual_features(counts, cols, n_components=16)
    for X, chunk in [(counts, 7), (sparse.csr_matrix(counts), 50), (sparse.csc_matrix(counts), None)]:
        np.testing.assert_allclose(residual_features(X, cols, n_components=16, chunk_size=chunk), ref, atol=1e-9)
    pivots = ref[np.argmax(np.abs(ref), axis=0), np.arange(ref.shape[1])]
    assert np.all(pivots > 0)


def test_features_bad_arguments(counts):
    with pytest.raises(ValueError, match="clip"):
        residual_features(counts, [0, 1], clip="seurat")
    with pytest.raises(ValueError, match="n_components"):
        residual_features(counts, [0, 1], n_components=0)
    with pytest.raises(IndexError, match="cols"):
        residual_features(counts, [0, 1000])
