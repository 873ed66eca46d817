"""CS-CORE kernel: agreement with the published formulas, planted structure, calibration, input handling."""

from __future__ import annotations

import copy
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse, stats

from musegnn_sc.pp import _cscore
from musegnn_sc.pp._cscore import adjust_pvalues, cscore, cscore_irls

FIELDS = ("mean", "variance", "covariance", "correlation", "statistic", "pvalue")


# --------------------------------------------------------------------------------------------------------------------
# Independent implementation: the published estimators written out directly (dense, float64, residuals computed as
# x - s mu, explicit sums per gene and per gene pair). Slow and obvious on purpose.
# --------------------------------------------------------------------------------------------------------------------


@np.errstate(divide="ignore", invalid="ignore")  # theta = 0 / 0 for a gene without counts
def reference_cscore(X, s, *, max_iter=10, tol=0.05):
    X = np.asarray(X, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    p = X.shape[1]
    s2, s4 = s**2, s**4
    # OLS start
    mu = np.array([np.sum(s * X[:, j]) / np.sum(s2) for j in range(p)])
    M = np.outer(s, mu)
    R = X - M
    sigma = np.array([np.sum(s2 * (R[:, j] ** 2 - M[:, j])) / np.sum(s4) for j in range(p)])
    theta = mu**2 / sigma
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 - n_iter is reported
        theta_prev = np.where(theta < 0, np.inf, theta)
        theta_med = np.median(theta[theta > 0])
        W = M + np.outer(s2, mu**2) / theta_med
        W[W <= 0] = 1
        mu = np.array([np.sum(s * X[:, j] / W[:, j]) / np.sum(s2 / W[:, j]) for j in range(p)])
        M = np.outer(s, mu)
        R = X - M
        H = (M**2 / theta_med + M) ** 2
        H[H <= 0] = 1
        sigma = np.array([np.sum(s2 * (R[:, j] ** 2 - M[:, j]) / H[:, j]) / np.sum(s4 / H[:, j]) for j in range(p)])
        theta = mu**2 / sigma
        both = (theta > 0) & (theta_prev > 0)
        if np.max(np.abs(np.log(theta[both]) - np.log(theta_prev[both]))) <= tol:
            break
    theta_med = np.median(theta[theta > 0])
    W = M + np.outer(s2, mu**2) / theta_med
    W[W <= 0] = 1
    V = M + np.outer(s2, sigma)  # model variance under independence
    V[V <= 0] = 1
    cov = np.empty((p, p))
    stat = np.empty((p, p))
    for j in range(p):
        for k in range(p):
            cov[j, k] = np.sum(s2 * R[:, j] * R[:, k] / (W[:, j] * W[:, k])) / np.sum(s4 / (W[:, j] * W[:, k]))
            stat[j, k] = np.sum(s2 * R[:, j] * R[:, k] / (V[:, j] * V[:, k])) / np.sqrt(
                np.sum(s4 / (V[:, j] * V[:, k]))
            )
    np.fill_diagonal(cov, sigma)
    rho = np.zeros((p, p))
    for j in range(p):
        for k in range(p):
            if sigma[j] > 0 and sigma[k] > 0:
                rho[j, k] = np.clip(cov[j, k] / np.sqrt(sigma[j] * sigma[k]), -1, 1)
    np.fill_diagonal(rho, 1)
    pval = 2 * stats.norm.sf(np.abs(stat))
    np.fill_diagonal(pval, 0)
    return {
        "mean": mu,
        "variance": sigma,
        "covariance": cov,
        "correlation": rho,
        "statistic": stat,
        "pvalue": pval,
        "n_iter": n_iter,
    }


# --------------------------------------------------------------------------------------------------------------------
# Simulation: latent expression with a known correlation (Gaussian copula, gamma marginals), Poisson counts at
# strongly varying depth, plus background genes so that total counts track the depth.
# --------------------------------------------------------------------------------------------------------------------


def latent_counts(rng, corr, n_cells, *, depth_sd=0.8, median_depth=2000.0, n_background=200, shape=2.0):
    p = corr.shape[0]
    g = rng.standard_normal((n_cells, p)) @ np.linalg.cholesky(corr).T
    frac = rng.uniform(5e-4, 3e-3, p)
    z = stats.gamma.ppf(stats.norm.cdf(g), a=shape, scale=frac / shape)
    s = median_depth * np.exp(rng.normal(0.0, depth_sd, n_cells))
    x = rng.poisson(s[:, None] * z)
    background = rng.poisson(s[:, None] * (1 - frac.sum()) / n_background, size=(n_cells, n_background))
    return np.hstack([x, background]), z


def planted_correlation(p_a=6, rho_a=0.7, p_b=6, rho_b=0.5, p_free=8):
    """Two modules (the last two genes of the second anti-correlated with the rest) and independent genes."""
    p = p_a + p_b + p_free
    C = np.eye(p)
    C[:p_a, :p_a] = rho_a
    C[p_a : p_a + p_b, p_a : p_a + p_b] = rho_b
    sign = np.ones(p)
    sign[p_a + p_b - 2 : p_a + p_b] = -1
    C *= np.outer(sign, sign)
    np.fill_diagonal(C, 1.0)
    return C


@pytest.fixture(scope="module")
def small():
    """300 cells x 60 genes: 12 analysed genes (one module of 4), background; some depths repeat."""
    rng = np.random.default_rng(0)
    C = np.eye(12)
    C[:4, :4] = 0.6
    np.fill_diagonal(C, 1.0)
    X, _ = latent_counts(rng, C, 300, median_depth=400.0, n_background=48)
    X[:, 11] = 0  # a gene without counts: variance 0, flagged
    X[5, 10] = 0
    return X, X.sum(axis=1).astype(np.float64)


def assert_fit_close(fit, ref, rtol):
    for name in FIELDS:
        a, b = getattr(fit, name), ref[name]
        scale = np.maximum(np.abs(b), np.abs(b).max() * 1e-6) if name != "pvalue" else np.maximum(np.abs(b), 1e-300)
        err = np.max(np.abs(a - b) / scale)
        assert err < rtol, f"{name}: relative error {err:.2e}"


# --------------------------------------------------------------------------------------------------------------------
# (a) agreement with the published formulas
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["tables", "streaming", "threaded"])
def test_matches_published_formulas(small, monkeypatch, route):
    X, depth = small
    if route == "streaming":  # no depth tables: every IRLS iteration streams over blocks of cells
        monkeypatch.setattr(_cscore, "_TABLE_BLOCKS", 0)
    if route == "threaded":  # the threaded element-wise kernels, used for large inputs only
        monkeypatch.setattr(_cscore, "_MIN_THREADED", 0)
    cols = np.arange(12)
    ref = reference_cscore(X[:, cols], depth)
    fit = cscore_irls(sparse.csr_matrix(X), depth, cols=cols, chunk_size=64)
    assert fit.n_iter == ref["n_iter"]
    assert fit.converged
    assert_fit_close(fit, ref, 1e-8)
    np.testing.assert_array_equal(fit.flagged, ref["variance"] <= 0)
    assert fit.flagged[11]
    assert np.all(fit.correlation[11, :11] == 0)
    np.testing.assert_array_equal(np.diag(fit.correlation), 1.0)
    for name in ("covariance", "correlation", "statistic", "pvalue"):
        np.testing.assert_array_equal(getattr(fit, name), getattr(fit, name).T)


def test_cols_and_rows_select_genes_and_cells(small):
    X, depth = small
    cols = np.array([7, 2, 0, 5, 3, 9])  # unsorted on purpose: results follow this order
    rows = np.ones(X.shape[0], dtype=bool)
    rows[::3] = False
    ref = reference_cscore(X[rows][:, cols], depth[rows])
    fit = cscore_irls(X, depth, cols=cols, rows=rows, chunk_size=50)
    assert_fit_close(fit, ref, 1e-8)


def test_tiny_pvalues_do_not_underflow():
    rng = np.random.default_rng(3)
    X, _ = latent_counts(rng, planted_correlation(), 3000)
    fit = cscore_irls(X, X.sum(axis=1).astype(np.float64), cols=np.arange(20))
    off = ~np.eye(20, dtype=bool)
    strong = off & (np.abs(fit.statistic) > 9)  # 1 - cdf(|T|) rounds to 0 here
    assert strong.any()
    assert np.all(fit.pvalue[strong] > 0)
    np.testing.assert_allclose(fit.pvalue[off], 2 * stats.norm.sf(np.abs(fit.statistic[off])), rtol=1e-12, atol=0)


def test_iteration_cap_warns_and_reports_no_convergence(small):
    X, depth = small
    with pytest.warns(UserWarning, match="did not converge in 1 iterations"):
        fit = cscore_irls(X, depth, cols=np.arange(12), max_iter=1, tol=1e-12)
    assert not fit.converged
    assert fit.n_iter == 1
    assert_fit_close(fit, reference_cscore(X[:, :12], depth, max_iter=1, tol=1e-12), 1e-8)


# --------------------------------------------------------------------------------------------------------------------
# (b) planted correlations, (c) calibration under independence
# --------------------------------------------------------------------------------------------------------------------


def test_recovers_planted_correlation_better_than_lognormal_pearson():
    rng = np.random.default_rng(0)
    C = planted_correlation()
    p = C.shape[0]
    X, z = latent_counts(rng, C, 3000)
    depth = X.sum(axis=1).astype(np.float64)
    assert depth.max() / depth.min() > 20  # strong depth variation
    adata = ad.AnnData(sparse.csr_matrix(X.astype(np.float32)))
    adata.var_names = [f"g{j}" for j in range(X.shape[1])]
    res = cscore(adata, genes=adata.var_names[:p])
    truth = np.corrcoef(z.T)
    lognorm = np.log1p(X[:, :p] / depth[:, None] * 1e4)
    pearson = np.corrcoef(lognorm.T)
    off = ~np.eye(p, dtype=bool)
    err_cscore = np.abs(res.correlation.to_numpy() - truth)[off].mean()
    err_pearson = np.abs(pearson - truth)[off].mean()
    assert err_cscore < 0.04
    assert err_cscore < 0.5 * err_pearson
    # The strongest module is recovered at its latent level, where Pearson on log-normalised data is attenuated.
    block = ~np.eye(6, dtype=bool)
    assert abs(res.correlation.to_numpy()[:6, :6][block].mean() - truth[:6, :6][block].mean()) < 0.05
    # The anti-correlated pair of genes in the second module comes out negative and significant.
    assert res.correlation.iloc[6, 11] < -0.3
    assert res.pvalue.iloc[6, 11] < 1e-6


def test_pvalues_uniform_under_independence():
    rng = np.random.default_rng(100)
    p = 30
    X, _ = latent_counts(rng, np.eye(p), 2000)
    fit = cscore_irls(X, X.sum(axis=1).astype(np.float64), cols=np.arange(p))
    pvals = fit.pvalue[np.triu_indices(p, 1)]
    assert stats.kstest(pvals, "uniform").pvalue > 0.01
    assert 0.01 < np.mean(pvals < 0.05) < 0.1


# --------------------------------------------------------------------------------------------------------------------
# (d) every input type and block size gives the same result
# --------------------------------------------------------------------------------------------------------------------


def assert_same_fit(a, b, rtol=1e-10):
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        scale = np.maximum(np.abs(y), np.abs(y).max() * 1e-6) if name != "pvalue" else np.maximum(np.abs(y), 1e-300)
        assert np.max(np.abs(x - y) / scale) < rtol, name
    assert a.n_iter == b.n_iter
    np.testing.assert_array_equal(a.flagged, b.flagged)


class _LazyMatrix:
    """Any object with ``shape`` and row slicing is accepted: here, rows served from a dense array on demand."""

    def __init__(self, X):
        self._X = X
        self.shape = X.shape

    def __getitem__(self, key):
        return self._X[key]


def _reversed_within_rows(csr):
    """The same matrix with unsorted column indices."""
    out = csr.copy()
    for i in range(out.shape[0]):
        sl = slice(out.indptr[i], out.indptr[i + 1])
        out.indices[sl] = out.indices[sl][::-1]
        out.data[sl] = out.data[sl][::-1]
    out.has_sorted_indices = False
    return out


def _with_duplicates(csr):
    """The same matrix with every count stored as two entries (non-canonical CSR, as scipy allows)."""
    half = np.floor(csr.data / 2)
    data = np.empty(2 * csr.nnz)
    data[0::2], data[1::2] = half, csr.data - half
    indices = np.repeat(csr.indices, 2)
    out = sparse.csr_matrix((data, indices, 2 * csr.indptr), shape=csr.shape)
    assert not out.has_canonical_format
    return out


@pytest.mark.parametrize("streaming", [False, True])
def test_dense_sparse_chunked_backed_agree(small, tmp_path, monkeypatch, streaming):
    if streaming:
        monkeypatch.setattr(_cscore, "_TABLE_BLOCKS", 0)
    X, depth = small
    cols = np.array([0, 1, 2, 3, 4, 8, 10, 11])
    base = cscore_irls(X, depth, cols=cols, chunk_size=None)
    csr = sparse.csr_matrix(X)
    inputs = {
        "float32": X.astype(np.float32),
        "csr": csr,
        "csr-int32": csr.astype(np.int32),
        "csc": sparse.csc_matrix(X),
        "csr-unsorted": _reversed_within_rows(csr),
        "csr-duplicates": _with_duplicates(csr),
        "lazy": _LazyMatrix(X),
    }
    for name, inp in inputs.items():
        # One cell per block, a size that does not divide n, exactly n, more than n.
        for chunk_size in (1, 7, X.shape[0], 10_000) if name in ("csr", "lazy") else (7, 10_000):
            fit = cscore_irls(inp, depth, cols=cols, chunk_size=chunk_size)
            assert_same_fit(fit, base), (name, chunk_size)
    adata = ad.AnnData(csr.astype(np.float32))
    adata.layers["dense"] = X.astype(np.float32)
    adata.write_h5ad(tmp_path / "counts.h5ad")
    backed = ad.read_h5ad(tmp_path / "counts.h5ad", backed="r")
    try:
        assert not sparse.issparse(backed.X)
        assert_same_fit(cscore_irls(backed.X, depth, cols=cols, chunk_size=45), base)
    finally:
        backed.file.close()
    dense_backed = ad.AnnData(X.astype(np.float32))
    dense_backed.write_h5ad(tmp_path / "dense.h5ad")
    backed = ad.read_h5ad(tmp_path / "dense.h5ad", backed="r")
    try:
        assert_same_fit(cscore_irls(backed.X, depth, cols=cols, chunk_size=45), base)
    finally:
        backed.file.close()


def test_cscore_on_backed_anndata(small, tmp_path):
    X, _ = small
    adata = ad.AnnData(sparse.csr_matrix(X.astype(np.float32)))
    adata.var_names = [f"g{j}" for j in range(X.shape[1])]
    genes = list(adata.var_names[:8])
    in_memory = cscore(adata, genes=genes)
    adata.write_h5ad(tmp_path / "counts.h5ad")
    backed = ad.read_h5ad(tmp_path / "counts.h5ad", backed="r")
    try:
        res = cscore(backed, genes=genes, chunk_size=40)
    finally:
        backed.file.close()
    pd.testing.assert_frame_equal(res.correlation, in_memory.correlation, rtol=1e-10, atol=1e-12)
    pd.testing.assert_frame_equal(res.pvalue, in_memory.pvalue, rtol=1e-10, atol=1e-300)


# --------------------------------------------------------------------------------------------------------------------
# AnnData entry point: depth, zero-count cells, labels, bad input, no side effects
# --------------------------------------------------------------------------------------------------------------------


def make_adata(X):
    adata = ad.AnnData(sparse.csr_matrix(X.astype(np.float32)))
    adata.var_names = [f"g{j}" for j in range(X.shape[1])]
    adata.obs_names = [f"c{i}" for i in range(X.shape[0])]
    return adata


def test_cscore_labels_depth_and_kernel_agree(small):
    X, depth = small
    adata = make_adata(X)
    genes = ["g3", "g0", "g7", "g1"]
    res = cscore(adata, genes=genes)
    fit = cscore_irls(X, depth, cols=[3, 0, 7, 1])
    for name in ("correlation", "pvalue", "statistic"):
        frame = getattr(res, name)
        assert list(frame.index) == genes
        assert list(frame.columns) == genes
        np.testing.assert_allclose(frame.to_numpy(), getattr(fit, name), rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(res.mean.to_numpy(), fit.mean, rtol=1e-12)
    np.testing.assert_allclose(res.variance.to_numpy(), fit.variance, rtol=1e-12)
    assert res.converged
    # Depth is taken over all genes of the matrix, not over the analysed genes.
    mask = np.zeros(adata.n_vars, dtype=bool)
    mask[[0, 1, 3, 7]] = True
    by_mask = cscore(adata, genes=mask)
    np.testing.assert_allclose(by_mask.correlation.loc[genes, genes].to_numpy(), res.correlation.to_numpy(), rtol=1e-10)
    adata.obs["depth"] = depth
    by_key = cscore(adata, genes=genes, depth_key="depth")
    np.testing.assert_allclose(by_key.correlation.to_numpy(), res.correlation.to_numpy(), rtol=1e-10)
    adata.obs["half"] = depth / 2  # a depth column changes the estimates (mu scales) but not the correlations much
    by_half = cscore(adata, genes=genes, depth_key="half")
    np.testing.assert_allclose(by_half.mean.to_numpy(), 2 * res.mean.to_numpy(), rtol=1e-8)
    np.testing.assert_allclose(by_half.correlation.to_numpy(), res.correlation.to_numpy(), atol=0.05)


def test_bh_correction_in_cscore(small):
    adata = make_adata(small[0])
    raw = cscore(adata, genes=adata.var_names[:10])
    bh = cscore(adata, genes=adata.var_names[:10], correction="fdr_bh")
    np.testing.assert_allclose(bh.pvalue.to_numpy(), adjust_pvalues(raw.pvalue.to_numpy(), "fdr_bh"))
    assert (bh.pvalue.to_numpy() >= raw.pvalue.to_numpy() - 1e-15).all()


def test_zero_count_cells_are_ignored_with_a_warning(small):
    X, _ = small
    with_zeros = np.insert(X, [0, 100, 100], 0, axis=0)
    adata = make_adata(with_zeros)
    with pytest.warns(UserWarning, match="3 cell\\(s\\).*zero total counts"):
        res = cscore(adata, genes=adata.var_names[:10])
    clean = cscore(make_adata(X), genes=adata.var_names[:10])
    for name in ("correlation", "pvalue", "statistic"):
        pd.testing.assert_frame_equal(getattr(res, name), getattr(clean, name), rtol=1e-10, atol=1e-300)


def test_cscore_leaves_adata_unchanged(small):
    X, _ = small
    adata = make_adata(X)
    adata.obs["group"] = pd.Categorical(["a", "b"] * (adata.n_obs // 2))
    adata.var["highly_variable"] = np.arange(adata.n_vars) < 10
    adata.uns["note"] = {"x": 1}
    adata.layers["counts"] = adata.X.copy()
    before = copy.deepcopy(adata)
    cscore(adata, genes=adata.var["highly_variable"].to_numpy(), layer="counts")
    assert (adata.X != before.X).nnz == 0
    assert (adata.layers["counts"] != before.layers["counts"]).nnz == 0
    assert list(adata.layers) == list(before.layers)
    pd.testing.assert_frame_equal(adata.obs, before.obs)
    pd.testing.assert_frame_equal(adata.var, before.var)
    assert adata.uns == before.uns
    assert list(adata.obsm) == list(before.obsm) == []
    assert list(adata.varp) == list(before.varp) == []


@pytest.mark.parametrize(
    ("edit", "error", "match"),
    [
        (lambda X: X * 0.5, ValueError, "non-integer.*layer="),
        (lambda X: X - 1, ValueError, "negative.*layer="),
        (lambda X: np.where(np.arange(X.shape[1]) == 3, np.nan, X), ValueError, "NaN.*layer="),
    ],
)
def test_bad_counts_are_rejected(small, edit, error, match):
    X = small[0].astype(np.float64)
    adata = ad.AnnData(edit(X))
    adata.var_names = [f"g{j}" for j in range(X.shape[1])]
    with pytest.raises(error, match=match):
        cscore(adata, genes=["g0", "g1"])


def test_bad_genes_and_shapes_are_rejected(small):
    X, _ = small
    adata = make_adata(X)
    with pytest.raises(KeyError, match="'nope'.*'missing'"):
        cscore(adata, genes=["g0", "nope", "missing"])
    with pytest.raises(ValueError, match="one entry per gene"):
        cscore(adata, genes=np.ones(3, dtype=bool))
    dup = adata.copy()
    dup.var_names = ["g0"] * 2 + list(adata.var_names[2:])
    with pytest.raises(ValueError, match="var_names_make_unique"):
        cscore(dup, genes=["g2", "g3"])
    with pytest.raises(ValueError, match="at least 2"):
        cscore(adata[:1].copy(), genes=["g0", "g1"])
    with pytest.raises(ValueError, match="'fdr_bh'"):
        cscore(adata, genes=["g0", "g1"], correction="bonferroni")
    with pytest.raises(KeyError, match="depth_key=None"):
        cscore(adata, genes=["g0", "g1"], depth_key="n_counts")
    with pytest.raises(KeyError, match="layers"):
        cscore(adata, genes=["g0", "g1"], layer="counts")
    adata.obs["bad_depth"] = np.where(np.arange(adata.n_obs) == 4, np.nan, 1000.0)
    with pytest.raises(ValueError, match="finite, non-negative"):
        cscore(adata, genes=["g0", "g1"], depth_key="bad_depth")


def test_data_without_biological_variance_is_rejected():
    """Counts exactly proportional to depth (less variable than Poisson): every variance estimate is negative."""
    X = np.outer(np.arange(1, 41), [1, 2, 3])
    with pytest.raises(ValueError, match="no gene with positive biological variance"):
        cscore_irls(X, X.sum(axis=1).astype(np.float64))


def test_many_genes_warn(small, monkeypatch):
    monkeypatch.setattr(_cscore, "_MANY_GENES", 5)
    adata = make_adata(small[0])
    with pytest.warns(UserWarning, match="square of the number of genes.*genes="):
        cscore(adata, genes=adata.var_names[:6])


# --------------------------------------------------------------------------------------------------------------------
# (h) Benjamini-Hochberg over gene pairs
# --------------------------------------------------------------------------------------------------------------------


def test_adjust_pvalues_matches_scipy_bh():
    rng = np.random.default_rng(5)
    p = 40
    raw = rng.uniform(size=(p, p)) ** 3
    raw[rng.uniform(size=(p, p)) < 0.1] = 0.3  # ties
    raw = np.triu(raw, 1)
    raw += raw.T
    adjusted = adjust_pvalues(raw, "fdr_bh")
    iu = np.triu_indices(p, 1)
    np.testing.assert_allclose(adjusted[iu], stats.false_discovery_control(raw[iu], method="bh"), rtol=1e-12)
    np.testing.assert_array_equal(adjusted, adjusted.T)
    np.testing.assert_array_equal(np.diag(adjusted), 0.0)
    unchanged = adjust_pvalues(raw, None)
    np.testing.assert_array_equal(unchanged, raw)
    assert unchanged is not raw
    with pytest.raises(ValueError, match="fdr_bh"):
        adjust_pvalues(raw, "holm")


# --------------------------------------------------------------------------------------------------------------------
# (i) device=: the same algorithm in torch float64 (on the CPU here; on CUDA in the gpu-marked test)
# --------------------------------------------------------------------------------------------------------------------


def _assert_same_graph(a, b):
    np.testing.assert_array_equal(np.asarray(a.pvalue) < 0.005, np.asarray(b.pvalue) < 0.005)


@pytest.fixture(scope="module")
def planted():
    """3,000 cells x 220 genes: two planted modules among 20 analysed genes, strong depth variation."""
    rng = np.random.default_rng(3)
    X, _ = latent_counts(rng, planted_correlation(), 3000)
    return X, X.sum(axis=1).astype(np.float64)


@pytest.mark.parametrize("route", ["tables", "streaming"])
def test_torch_path_matches_numba_path(small, monkeypatch, route):
    """``device='cpu'`` runs the torch kernel: every input type, block size and cell mask gives the numba numbers."""
    pytest.importorskip("torch")
    # Depth tables for every block size, or none: every IRLS step streams over the cells.
    monkeypatch.setattr(_cscore, "_TABLE_BLOCKS", 0 if route == "streaming" else 10**9)
    X, depth = small
    cols = np.array([0, 1, 2, 3, 4, 8, 10, 11])  # gene 11 has no counts: flagged
    rows = np.ones(X.shape[0], dtype=bool)
    rows[::4] = False
    csr = sparse.csr_matrix(X.astype(np.float32))
    inputs = {
        "csr": csr,
        "dense": X,
        "csc": sparse.csc_matrix(X),
        "csr-duplicates": _with_duplicates(sparse.csr_matrix(X)),
        "lazy": _LazyMatrix(X),
    }
    for name, inp in inputs.items():
        for chunk_size in {"csr": (1, 7, None), "lazy": (7, None)}.get(name, (64,)):
            for mask in (None, rows):
                base = cscore_irls(inp, depth, cols=cols, rows=mask, chunk_size=chunk_size)
                fit = cscore_irls(inp, depth, cols=cols, rows=mask, chunk_size=chunk_size, device="cpu")
                assert_same_fit(fit, base)
                _assert_same_graph(fit, base)
                assert fit.converged == base.converged
                for field in ("covariance", "correlation", "statistic", "pvalue"):
                    np.testing.assert_array_equal(getattr(fit, field), getattr(fit, field).T)
    assert fit.flagged[-1]


def test_torch_path_gives_the_same_graph(planted):
    """The AnnData entry point on sparse counts with empty cells: same correlations, p-values and p<0.005 graph."""
    torch = pytest.importorskip("torch")
    X, _ = planted
    adata = make_adata(np.insert(X, [0, 1500], 0, axis=0))  # two cells without counts: a `rows` mask inside
    genes = adata.var_names[:20]
    with pytest.warns(UserWarning, match="zero total counts"):
        base = cscore(adata, genes=genes, chunk_size=700)
    for device in ("cpu", torch.device("cpu")):
        with pytest.warns(UserWarning, match="zero total counts"):
            res = cscore(adata, genes=genes, chunk_size=700, device=device)
        for name in ("correlation", "pvalue", "statistic"):
            pd.testing.assert_frame_equal(getattr(res, name), getattr(base, name), rtol=1e-10, atol=1e-300)
        assert np.abs(res.correlation.to_numpy() - base.correlation.to_numpy()).max() < 1e-10
        assert np.abs(res.pvalue.to_numpy() - base.pvalue.to_numpy()).max() < 1e-10
        _assert_same_graph(res, base)
    edges = (base.pvalue.to_numpy() < 0.005).sum()
    assert 20 < edges < 400  # the planted modules, not an empty or a complete graph


@pytest.mark.parametrize(
    ("device", "match"),
    [
        ("gpu0", "`device='gpu0'` is not a torch device.*None"),
        ("meta", "`device='meta'`.*'cuda' or 'cpu'"),
        ("cuda", "`device='cuda'` but CUDA is not available.*device=None"),
        ("cuda:7", "`device='cuda:7'` but CUDA is not available.*device=None"),
    ],
)
def test_unusable_device_is_rejected(small, monkeypatch, device, match):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    adata = make_adata(small[0])
    with pytest.raises(ValueError, match=match) as err:
        cscore(adata, genes=["g0", "g1"], device=device)
    assert "\n" not in str(err.value)


def test_device_without_torch_is_rejected(small, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(ValueError, match="`device='cuda'` runs CS-CORE in PyTorch, which is not installed.*None"):
        cscore(make_adata(small[0]), genes=["g0", "g1"], device="cuda")
    fit = cscore_irls(small[0], small[1], cols=np.arange(4))  # the default path does not need torch
    assert fit.correlation.shape == (4, 4)


def test_default_path_does_not_import_torch():
    code = (
        "import sys, numpy as np, musegnn_sc as msg;"
        "rna = msg.datasets.toy_mudata(seed=0, n_cells=200, n_genes=150, include_mouse=False, include_atac=False,"
        " include_spatial=False)['rna_heart_1'];"
        "msg.pp.cscore(rna, genes=rna.var_names[:10]);"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.gpu
def test_cuda_matches_cpu(planted):
    """``device='cuda'``: the numba path's numbers and graph, on a GPU (skipped without CUDA)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (torch.cuda.is_available() is False)")
    X, depth = planted
    csr = sparse.csr_matrix(X.astype(np.float32))
    rows = np.ones(X.shape[0], dtype=bool)
    rows[::5] = False
    cols = np.arange(20)
    for mask in (None, rows):
        for chunk_size in (None, 333):
            base = cscore_irls(csr, depth, cols=cols, rows=mask, chunk_size=chunk_size)
            fit = cscore_irls(csr, depth, cols=cols, rows=mask, chunk_size=chunk_size, device="cuda")
            assert_same_fit(fit, base)
            _assert_same_graph(fit, base)
    adata = make_adata(X)
    res = cscore(adata, genes=adata.var_names[:20], device="cuda:0")
    pd.testing.assert_frame_equal(res.pvalue, cscore(adata, genes=adata.var_names[:20]).pvalue, rtol=1e-10, atol=1e-300)
