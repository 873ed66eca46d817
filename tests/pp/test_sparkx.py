from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse, stats

from musegnn_sc.pp._sparkx import KERNELS_MIXTURE, acat, chi2_logsf, sparkx_test

N_PLANTED = 5


def simulate_spatial(n_side: int = 25, n_null: int = 200, seed: int = 0):
    """Spots on a jittered grid; planted genes with smooth spatial means, null genes with constant means."""
    rng = np.random.default_rng(seed)
    xx, yy = np.meshgrid(np.arange(n_side, dtype=float), np.arange(n_side, dtype=float))
    coords = np.c_[xx.ravel(), yy.ravel()] + rng.normal(0, 0.15, (n_side**2, 2))
    x, y = (coords / n_side).T
    planted = [
        1 + 4 * x,  # gradient
        1 + 4 * (1 - y),  # gradient along the other axis
        0.5 + 6 * np.exp(-((x - 0.3) ** 2 + (y - 0.65) ** 2) / 0.02),  # hotspot
        0.5 + 5 * np.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.05),  # central domain
        2.5 + 2 * np.cos(4 * np.pi * (x - 0.5)),  # periodic along x
    ]
    means = np.column_stack([*planted, *[np.full(len(x), m) for m in rng.uniform(0.3, 5, n_null)]])
    return coords, rng.poisson(means).astype(np.float64)


@pytest.fixture(scope="module")
def spatial():
    return simulate_spatial()


def test_finds_planted_genes_and_not_null_ones(spatial):
    coords, Y = spatial
    res = sparkx_test(sparse.csr_matrix(Y), coords)
    assert (res["padj"].iloc[:N_PLANTED] < 0.05).all()
    top = np.argsort(-res["score"].to_numpy(), kind="stable")[:N_PLANTED]
    assert set(top) == set(range(N_PLANTED))
    null = res["pval"].to_numpy()[N_PLANTED:]
    assert stats.kstest(null, "uniform").pvalue > 0.01
    assert (null < 0.05).mean() < 0.1
    assert (res["padj"].to_numpy()[N_PLANTED:] < 0.05).sum() <= 1
    np.testing.assert_allclose(res["score"], -np.log10(res["pval"]), rtol=1e-10)


def _kernel_matrices(coords):
    """The eleven transformed coordinate sets, built from the published description."""
    s = coords - coords.mean(axis=0)
    out = [coords]
    ells = [np.quantile(np.abs(s), q, axis=0) for q in (0.2, 0.4, 0.6, 0.8, 1.0)]
    out += [np.exp(-(s**2) / (2 * ell**2)) for ell in ells]
    out += [np.cos(2 * np.pi * s / ell) for ell in ells]
    return out


def test_per_kernel_pvalues_match_both_published_forms(spatial):
    coords, Y = spatial
    genes = [0, 2, 4, 10, 11, 12]
    res = sparkx_test(Y[:, genes], coords, return_kernels=True)
    n = len(Y)
    for name, E in zip(KERNELS_MIXTURE, _kernel_matrices(coords), strict=True):
        Ec = E - E.mean(axis=0)
        M = np.linalg.inv(Ec.T @ Ec)
        d = E.shape[1]
        for j, g in enumerate(genes):
            y = Y[:, g]
            # Score form: T = n u' M u / y'y, null lambda_G chi2_d with lambda_G = 1 - n ybar^2 / y'y.
            u = Ec.T @ y
            T = n * u @ M @ u / (y @ y)
            lam = 1 - n * y.mean() ** 2 / (y @ y)
            p_score = stats.chi2.sf(T / lam, d)
            # Regression form: n R^2 of y on the transformed coordinates (with intercept).
            A = np.c_[np.ones(n), E]
            fit = A @ np.linalg.lstsq(A, y, rcond=None)[0]
            r2 = 1 - np.sum((y - fit) ** 2) / np.sum((y - y.mean()) ** 2)
            p_reg = stats.chi2.sf(n * r2, d)
            np.testing.assert_allclose(p_score, p_reg, rtol=1e-9)
            np.testing.assert_allclose(res[f"pval_{name}"].iloc[j], p_score, rtol=1e-9, atol=1e-300)


def test_acat_against_hand_computation():
    p = np.array([0.01, 0.2, 0.5, 0.9])
    c = np.mean(np.tan((0.5 - p) * np.pi))
    np.testing.assert_allclose(acat(p), 0.5 - np.arctan(c) / np.pi, rtol=1e-12)
    # Tiny p-values use 1 / (p pi) and huge statistics 1 / (C pi).
    p = np.array([1e-20, 0.3])
    c = (1 / (1e-20 * np.pi) + np.tan(0.2 * np.pi)) / 2
    np.testing.assert_allclose(acat(p), 1 / (c * np.pi), rtol=1e-12)
    np.testing.assert_allclose(acat(np.array([[0.0, 0.5], [1.0, 0.01], [0.3, 0.3]])), [0.0, 1.0, 0.3], rtol=1e-12)
    with pytest.raises(ValueError, match="NaN"):
        acat(np.array([0.1, np.nan]))


def test_invariant_to_translating_and_scaling_coordinates(spatial):
    coords, Y = spatial
    Y = Y[:, :40]
    ref = sparkx_test(Y, coords, return_kernels=True)
    # Per-axis affine maps leave every kernel unchanged (bandwidths are quantiles of the centred coordinates).
    moved = sparkx_test(Y, coords * np.array([3.0, 0.01]) + np.array([-100.0, 7.0]), return_kernels=True)
    np.testing.assert_allclose(moved.to_numpy(float), ref.to_numpy(float), rtol=1e-7, atol=1e-12)
    # The projection kernel is invariant to any invertible linear map, rotations included.
    rot = np.array([[np.cos(0.7), -np.sin(0.7)], [np.sin(0.7), np.cos(0.7)]])
    single = sparkx_test(Y, coords, option="single")
    rotated = sparkx_test(Y, coords @ rot.T * 5 + 1, option="single")
    np.testing.assert_allclose(rotated["pval"], single["pval"], rtol=1e-7)
    np.testing.assert_allclose(single["pval"], ref["pval_projection"], rtol=1e-12)


def test_formats_chunks_and_dropped_locations(spatial):
    coords, Y = spatial
    Y = Y[:, :30].copy()
    ref = sparkx_test(Y, coords)
    for X, chunk in [(sparse.csr_matrix(Y), 50), (sparse.csc_matrix(Y), 7), (Y, 333)]:
        np.testing.assert_allclose(sparkx_test(X, coords, chunk_size=chunk).to_numpy(float), ref.to_numpy(float))
    # Locations without counts are dropped, as are those outside `rows`.
    Z = np.vstack([Y, np.zeros((5, Y.shape[1]))])
    zc = np.vstack([coords, np.full((5, 2), 100.0)])
    np.testing.assert_allclose(sparkx_test(Z, zc).to_numpy(float), ref.to_numpy(float), rtol=1e-10)
    rows = np.r_[np.ones(len(Y), bool), np.zeros(5, bool)]
    Z[len(Y) :] = 7
    np.testing.assert_allclose(sparkx_test(Z, zc, rows=rows).to_numpy(float), ref.to_numpy(float), rtol=1e-10)


def test_untestable_genes_and_adjustment(spatial):
    coords, Y = spatial
    Y = Y[:, :30].copy()
    Y[:, 3] = 0
    Y[:, 7] = 2  # constant: zero variance
    Y[:, 9] = 2
    Y[0, 9] = 0  # not constant, although every stored value is equal
    Xs = sparse.csr_matrix(Y)
    Xs.data[Xs.indices == 11] = 0  # stored zeros only: no counts
    res = sparkx_test(Xs, coords)
    Y[:, 11] = 0
    np.testing.assert_allclose(res.to_numpy(float), sparkx_test(Y, coords, chunk_size=100).to_numpy(float), rtol=1e-10)
    assert not res["tested"].iloc[[3, 7, 11]].any()
    assert res["tested"].drop(index=[3, 7, 11]).all()
    assert (res.loc[[3, 7, 11], ["pval", "padj"]] == 1).all().all()
    assert (res.loc[[3, 7, 11], "score"] == 0).all()
    tested = res["tested"].to_numpy()
    np.testing.assert_allclose(
        res["padj"][tested], stats.false_discovery_control(res["pval"][tested], method="by"), rtol=1e-12
    )


@pytest.mark.parametrize("df", [1, 2, 3, 4])
def test_chi2_logsf(df):
    x = np.array([0.0, 1e-3, 0.5, 3.0, 40.0, 300.0, 1200.0])
    np.testing.assert_allclose(chi2_logsf(x, df), stats.chi2.logsf(x, df), rtol=1e-10, atol=1e-14)
    far = chi2_logsf(np.array([3000.0, 6000.0]), df)
    # Beyond scipy's range: finite, and within the bounds of the chi2 tail, -x/2 + O(log x).
    assert np.isfinite(far).all()
    np.testing.assert_allclose(far, [-1500, -3000], atol=3 * np.log(6000))


def test_score_stays_ordered_when_pvalues_underflow():
    rng = np.random.default_rng(5)
    coords = rng.random((3000, 2))
    means = np.column_stack([1 + 40 * coords[:, 0], 1 + 20 * coords[:, 0], 1 + 10 * coords[:, 0]])
    res = sparkx_test(rng.poisson(means).astype(float), coords)
    assert (res["pval"] == 0).all()
    score = res["score"].to_numpy()
    assert np.isfinite(score).all()
    assert score[0] > score[1] > score[2] > 300


def test_bad_input():
    coords = np.random.default_rng(0).random((10, 2))
    Y = np.ones((10, 3))
    with pytest.raises(ValueError, match="option"):
        sparkx_test(Y, coords, option="gaussian")
    with pytest.raises(ValueError, match="one row per location"):
        sparkx_test(Y, coords[:5])
    with pytest.raises(ValueError, match="at least 3 locations"):
        sparkx_test(np.r_[np.ones((2, 3)), np.zeros((8, 3))], coords)
    with pytest.raises(ValueError, match="do not vary"):
        sparkx_test(Y, np.zeros((10, 2)))
