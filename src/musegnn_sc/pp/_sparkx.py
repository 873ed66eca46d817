"""SPARK-X (Zhu, Sun & Zhou 2021, Genome Biology): a non-parametric test for spatially variable genes.

Clean-room implementation from the published method (the reference R package is GPL and was not used).

For a kernel given by transformed coordinates ``E`` (locations x d), with column-centred ``Ec``, the score statistic
of gene counts ``y`` is ``T = n * u^T (Ec^T Ec)^-1 u / (y^T y)`` with ``u = Ec^T y``. Under the null it is
``lambda_G * chi2_d`` with ``lambda_G = 1 - n * mean(y)**2 / (y^T y)`` (the kernel's weights are all 1), so the p-value
is ``chi2.sf(T / lambda_G, d)``; ``T / lambda_G = n * R^2``, the coefficient of determination of ``y`` regressed on
``Ec``. The eleven kernels of ``option="mixture"`` (the coordinates themselves, five Gaussian and five cosine
transforms with bandwidths at quantiles of the centred coordinates) are combined by the Cauchy combination (ACAT),
and the combined p-values are adjusted across genes by Benjamini-Yekutieli.

All genes are tested in one pass over blocks of cells: the only product with the counts is ``Y^T W`` with ``W`` the
orthonormalised kernel columns side by side (``n x <= 22``), which for sparse counts costs ``O(nnz * 22)``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse, special, stats

from musegnn_sc._chunks import iter_row_chunks, row_sums

#: Quantiles of |centred coordinate| used as bandwidths of the Gaussian and cosine kernels.
BANDWIDTH_QUANTILES = (0.2, 0.4, 0.6, 0.8, 1.0)
#: Names of the kernels, in the order of the per-kernel columns.
KERNELS_MIXTURE = (
    "projection",
    *(f"gaussian_{i + 1}" for i in range(len(BANDWIDTH_QUANTILES))),
    *(f"cosine_{i + 1}" for i in range(len(BANDWIDTH_QUANTILES))),
)
#: Target number of values in one block of counts when ``chunk_size`` is ``None``.
_BLOCK_VALUES = 1 << 22


def kernel_coordinates(coords: np.ndarray, option: str = "mixture") -> dict[str, np.ndarray]:
    """The transformed coordinates ``E`` of each SPARK-X kernel (before centring).

    Parameters
    ----------
    coords
        Locations x 2 (or 3) coordinates.
    option
        ``"mixture"``: the eleven kernels; ``"single"``: the projection kernel only.

    Returns
    -------
    Kernel name to ``E``. Coordinate columns whose bandwidth is zero (constant along that axis, or a quantile that
    falls on the centre) are left out of that kernel.
    """
    if option not in ("mixture", "single"):
        msg = f"`option` must be 'mixture' (eleven kernels, the SPARK-X default) or 'single', got {option!r}."
        raise ValueError(msg)
    coords = np.asarray(coords, dtype=np.float64)
    out = {"projection": coords}
    if option == "single":
        return out
    s = coords - coords.mean(axis=0)
    ells = np.quantile(np.abs(s), BANDWIDTH_QUANTILES, axis=0)
    for i, ell in enumerate(ells):
        ok = ell > 0
        out[f"gaussian_{i + 1}"] = np.exp(-(s[:, ok] ** 2) / (2 * ell[ok] ** 2))
    for i, ell in enumerate(ells):
        ok = ell > 0
        out[f"cosine_{i + 1}"] = np.cos(2 * np.pi * s[:, ok] / ell[ok])
    return out


def _orthonormal_basis(E: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the column space of the centred ``E`` (its numerical rank is the test's d.f.)."""
    Ec = E - E.mean(axis=0)
    if Ec.shape[1] == 0:
        return Ec
    lam, vec = np.linalg.eigh(Ec.T @ Ec)
    keep = lam > max(lam.max(), 0.0) * Ec.shape[1] * np.finfo(np.float64).eps * 1e3
    # Ec V diag(1/sqrt(lambda)) has orthonormal columns, so u^T M u becomes a plain sum of squares.
    return Ec @ (vec[:, keep] / np.sqrt(lam[keep]))


def chi2_logsf(x: np.ndarray, df: int) -> np.ndarray:
    """Natural log of the chi-squared survival function, finite far beyond where ``chi2.sf`` underflows.

    SPARK-X statistics of strongly spatial genes reach thousands, where :func:`scipy.stats.chi2.logsf` returns
    ``-inf``; the closed forms for 1, 2 and 3 degrees of freedom (the only ones 2-D or 3-D coordinates give) do not.
    """
    x = np.asarray(x, dtype=np.float64)
    if df == 1:
        return np.log(2.0) + special.log_ndtr(-np.sqrt(x))
    if df == 2:
        return -x / 2
    if df == 3:
        with np.errstate(divide="ignore"):
            second = 0.5 * np.log(2 * x / np.pi) - x / 2
        return np.logaddexp(np.log(2.0) + special.log_ndtr(-np.sqrt(x)), second)
    out = stats.chi2.logsf(x, df)
    bad = ~np.isfinite(out)
    if bad.any():
        # Leading terms of the asymptotic expansion of the upper incomplete gamma function.
        a, z = df / 2, x[bad] / 2
        out[bad] = (a - 1) * np.log(z) - z - special.gammaln(a) + np.log1p((a - 1) / z)
    return out


def acat(pvals: np.ndarray, axis: int = -1) -> np.ndarray:
    """Cauchy combination (ACAT, Liu & Xie 2020) of p-values along ``axis`` with equal weights.

    ``C = mean_k tan((0.5 - p_k) * pi)`` and the combined p-value is the Cauchy survival function at ``C``. A zero
    p-value gives 0, otherwise a p-value of 1 gives 1. The published recipe replaces the tangent by ``1 / (p_k * pi)``
    when ``p_k < 1e-16`` and the survival function by ``1 / (C * pi)`` when ``C > 1e15``, to avoid cancellation; the
    exact identities ``tan((0.5 - p) * pi) = 1 / tan(p * pi)`` and ``sf(C) = arctan(1 / C) / pi`` (``C > 0``) used here
    agree with those limits and keep full relative precision at every p-value (one p-value combines to itself).
    """
    p = np.moveaxis(np.asarray(pvals, dtype=np.float64), axis, -1)
    if np.isnan(p).any():
        msg = "ACAT got NaN p-values."
        raise ValueError(msg)
    if ((p < 0) | (p > 1)).any():
        msg = "ACAT got p-values outside [0, 1]."
        raise ValueError(msg)
    k = p.shape[-1]
    small = p < 0.5
    with np.errstate(divide="ignore"):
        terms = np.where(small, 1 / np.tan(np.where(small, p, 0.25) * np.pi), np.tan((0.5 - p) * np.pi))
        c = terms.sum(axis=-1) / k
        out = np.where(c > 0, np.arctan(1 / np.where(c > 0, c, 1.0)) / np.pi, 0.5 - np.arctan(c) / np.pi)
    out = np.where((p == 1).any(axis=-1), 1.0, out)
    out = np.where((p == 0).any(axis=-1), 0.0, out)
    return out


def _acat_score(pval: np.ndarray, log_pk: np.ndarray) -> np.ndarray:
    """``-log10`` of the combined p-value, still finite and ordered where that p-value underflows to 0.

    Deep in the tail every Cauchy term is ``1 / (p_k * pi)``, so the combined p-value is ``K / sum_k 1 / p_k``, whose
    logarithm ``log K - logsumexp(-log p_k)`` is computed from the per-kernel log p-values without underflow.
    """
    tail = np.log(log_pk.shape[1]) - special.logsumexp(-log_pk, axis=1)
    with np.errstate(divide="ignore"):
        direct = -np.log10(pval)
    return np.where(pval > 1e-280, direct, -tail / np.log(10))


def sparkx_test(
    X,
    coords: np.ndarray,
    *,
    option: str = "mixture",
    rows: np.ndarray | None = None,
    return_kernels: bool = False,
    chunk_size: int | None = None,
) -> pd.DataFrame:
    """SPARK-X test of every gene (column of ``X``) for spatial variation.

    Parameters
    ----------
    X
        Raw counts, locations x genes: dense, scipy sparse, or a backed matrix.
    coords
        Locations x 2 (or 3) coordinates, one row per row of ``X``.
    option
        ``"mixture"``: the eleven kernels (SPARK-X's default); ``"single"``: the projection kernel only.
    rows
        Boolean mask of the locations to use; ``None`` uses all. Locations whose counts sum to zero over the columns
        of ``X`` are always dropped, as in SPARK-X.
    return_kernels
        Add one column ``pval_<kernel>`` per kernel.
    chunk_size
        Locations per block; ``None`` picks blocks of about four million values. Results do not depend on it.

    Returns
    -------
    One row per column of ``X``, in order, with columns ``pval`` (ACAT-combined p-value), ``padj``
    (Benjamini-Yekutieli over the tested genes), ``score`` (``-log10 pval``, computed in log space so that it keeps
    ordering genes whose p-value underflows to 0) and ``tested`` (False for genes without counts or with constant counts
    over the locations used, whose ``pval`` and ``padj`` are 1 and ``score`` 0).
    """
    n_obs, n_vars = X.shape
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[0] != n_obs:
        msg = f"`coords` must have one row per location ({n_obs}), got shape {coords.shape}."
        raise ValueError(msg)
    keep = np.ones(n_obs, dtype=bool) if rows is None else np.asarray(rows, dtype=bool).copy()
    if keep.shape != (n_obs,):
        msg = f"`rows` must be a boolean mask with one entry per location ({n_obs}), got shape {keep.shape}."
        raise ValueError(msg)
    chunk = max(64, _BLOCK_VALUES // max(n_vars, 1)) if chunk_size is None else int(chunk_size)
    if chunk < 1:
        msg = f"`chunk_size` must be a positive number of locations, got {chunk_size}."
        raise ValueError(msg)
    keep &= row_sums(X, chunk) > 0
    n = int(keep.sum())
    if n < 3:
        msg = f"SPARK-X needs at least 3 locations with counts, got {n}."
        raise ValueError(msg)

    kernels = kernel_coordinates(coords[keep], option)
    bases = {name: _orthonormal_basis(E) for name, E in kernels.items()}
    bases = {name: B for name, B in bases.items() if B.shape[1] > 0}
    if not bases:
        msg = "The coordinates do not vary (all locations at one point): no spatial test is possible."
        raise ValueError(msg)
    W = np.hstack(list(bases.values()))
    pos = np.cumsum(keep) - 1

    proj = np.zeros((n_vars, W.shape[1]))
    s1 = np.zeros(n_vars)
    s2 = np.zeros(n_vars)
    # Extremes and number of the stored values of each gene, to find the constant genes exactly.
    lo = np.full(n_vars, np.inf)
    hi = np.full(n_vars, -np.inf)
    stored = np.zeros(n_vars, dtype=np.int64)
    for idx, block in iter_row_chunks(X, chunk, rows=keep, dense=False):
        Wb = W[pos[idx]]
        if sparse.issparse(block):
            proj += np.asarray(block.T @ Wb)
            # Column reductions through the CSR arrays: scipy's min/max along axis 0 would convert to CSC.
            ind, val = block.indices, block.data.astype(np.float64, copy=False)
            s1 += np.bincount(ind, weights=val, minlength=n_vars)
            s2 += np.bincount(ind, weights=val * val, minlength=n_vars)
            stored += np.bincount(ind, minlength=n_vars)
            np.minimum.at(lo, ind, val)
            np.maximum.at(hi, ind, val)
        else:
            proj += block.T @ Wb
            s1 += block.sum(axis=0)
            s2 += np.einsum("ij,ij->j", block, block)
            stored += block.shape[0]
            lo = np.minimum(lo, block.min(axis=0))
            hi = np.maximum(hi, block.max(axis=0))

    # Constant: nothing stored, or all stored values equal and either every location stored or the value is 0.
    constant = (stored == 0) | ((hi == lo) & ((stored == n) | (hi == 0)))
    tested = ~constant
    tss = np.where(tested, s2 - s1 * s1 / n, 1.0)
    log_pk = np.zeros((n_vars, len(bases)))
    start = 0
    for j, B in enumerate(bases.values()):
        d = B.shape[1]
        ess = np.einsum("ij,ij->i", proj[:, start : start + d], proj[:, start : start + d])
        start += d
        r2 = np.clip(ess / tss, 0.0, 1.0)
        log_pk[tested, j] = chi2_logsf(n * r2[tested], d)
    pk = np.exp(log_pk)

    pval = np.ones(n_vars)
    padj = np.ones(n_vars)
    score = np.zeros(n_vars)
    if tested.any():
        pval[tested] = acat(pk[tested])
        padj[tested] = stats.false_discovery_control(pval[tested], method="by")
        score[tested] = _acat_score(pval[tested], log_pk[tested])
    out = pd.DataFrame({"pval": pval, "padj": padj, "score": score, "tested": tested})
    if return_kernels:
        names = list(bases)
        for name in kernels if option == "single" else KERNELS_MIXTURE:
            out[f"pval_{name}"] = pk[:, names.index(name)] if name in names else np.nan
    return out
