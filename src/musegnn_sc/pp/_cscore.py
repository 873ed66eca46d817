"""CS-CORE: cell-type-specific co-expression from raw counts (Su et al. 2023, Nat Commun).

Model: ``x_ij ~ Poisson(s_i z_ij)`` with sequencing depth ``s_i`` and latent expression ``z_ij`` of mean ``mu_j``,
variance ``sigma_jj`` and covariance ``sigma_jk``. The moment equations ``E x = s mu``,
``E (x - s mu)^2 = s mu + s^2 sigma_jj`` and ``E (x_j - s mu_j)(x_k - s mu_k) = s^2 sigma_jk`` are solved by
iteratively re-weighted least squares over cells.

How the kernel is organised, and why:

* Every sum runs over cells, and every weight depends on a cell only through its depth. Cells are therefore grouped
  by unique depth value (real depths are integers and repeat a lot). The IRLS needs, per gene, sums of
  ``x * f(s, mu)`` and ``x^2 * f(s, mu)``; with the tables ``T[u, j] = sum_{i: s_i = u} x_ij`` and
  ``Q[u, j] = sum_{i: s_i = u} x_ij^2`` (read in one pass, from the nonzeros only) every IRLS iteration runs on
  those tables without touching the counts again. When there are too many distinct depths for the tables to fit in
  the memory of a few blocks of cells, each iteration streams over the blocks instead (two passes per iteration);
  both routes give the same numbers up to summation order.
* The two denominators of the final step are Gram matrices ``B^T B`` with ``B_ij = s_i^2 / w_ij`` a function of
  ``(s_i, mu_j)`` only: ``B^T B = sum_u c_u b_u b_u^T`` over unique depths ``u`` with multiplicities ``c_u``.
* The two numerators are ``P^T P`` with ``P_ij = s_i (x_ij - s_i mu_j) / w_ij``, accumulated block by block with the
  BLAS symmetric rank-k update (``dsyrk``: half the flops of a general product). These four products dominate the
  run time (``O(n p^2)``); everything else is ``O(nnz + U p)`` per iteration.
* Element-wise work is fused in numba loops so that no ``n x p`` temporary exists; memory is bounded by a few
  ``chunk_size x p`` blocks plus ``O(p^2)`` for the results.
* With ``device=`` (a torch device, e.g. a GPU) the same blocks are read the same way on the CPU and sent to the
  device, where the tables, the IRLS sums and the four products are computed in torch float64
  (:mod:`musegnn_sc.pp._cscore_torch`, imported only then); the IRLS's control flow and the final step stay here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numba
import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse
from scipy.linalg import blas

from musegnn_sc import _logging as logg
from musegnn_sc._chunks import DEFAULT_CHUNK_SIZE, iter_row_chunks
from musegnn_sc._docs import doc_adata_counts, doc_chunk_size, doc_layer, doc_params
from musegnn_sc._validate import check_counts, check_shape, check_unique_var_names, get_matrix, nonzero_cells

if TYPE_CHECKING:
    from collections.abc import Iterator

    import torch

#: Depth tables are used while they hold at most this many blocks' worth of rows (``2 x chunk_size`` distinct
#: depths: ``T`` and ``Q`` then take as much memory as four dense blocks); beyond, the IRLS streams over the cells.
_TABLE_BLOCKS = 2

#: Rows per symmetric rank-k update of the final step.
_SYRK_ROWS = 2048

#: Element-wise kernels run threaded from this many elements on.
_MIN_THREADED = 1 << 18

#: Above this many genes :func:`cscore` warns: time and memory grow with the square of the number of genes.
_MANY_GENES = 5000

# Unit weights (the OLS start), the mean update, and the variance update of the IRLS.
_OLS, _MEAN, _VAR = 0, 1, 2
_SQRT2 = math.sqrt(2.0)

doc_device = """\
device
    Where CS-CORE's sums over cells and gene x gene products run. ``None`` (default): on the CPU, with numba kernels
    and BLAS. A torch device (``'cuda'``, ``'cuda:1'`` or a :class:`torch.device`): the same algorithm in torch
    float64 on that device, e.g. a GPU; cells are still read in blocks of ``chunk_size`` on the CPU and sent to the
    device one block at a time, and the results come back as numpy arrays. Results agree with the default path up
    to floating-point summation order (on the data tried: differences below ``1e-10`` in correlations and p-values,
    identical p < 0.005 graphs). ``'cpu'`` runs the torch code on the CPU, slower than ``None`` (a check). Needs
    PyTorch, a CUDA build for a GPU."""


def resolve_device(
    device: str | torch.device | None, *, option: str = "device", default: str = "`device=None`"
) -> torch.device | None:
    """The torch device CS-CORE runs on (``None``: the numba path); torch is imported only when a device is given.

    Raises a one-line :class:`ValueError` that names the fix when torch is missing, the device is not a torch
    device, CUDA is asked for where it is not available, or the device type cannot compute in float64. ``option``
    and ``default`` name the parameter and its default value in the message (the command line passes its own).
    """
    if device is None:
        return None
    given = f"`{option}={device!r}`" if option.isidentifier() else f"{option} {device}"
    cpu = f"pass {default} for the CPU path"
    try:
        import torch
    except ImportError:
        msg = f"{given} runs CS-CORE in PyTorch, which is not installed: install torch (a CUDA build for a GPU), or {cpu}."
        raise ValueError(msg) from None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        msg = f"{given} is not a torch device: use 'cuda', 'cuda:0' or 'cpu', or {cpu}."
        raise ValueError(msg) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            msg = (
                f"{given} but CUDA is not available (torch.cuda.is_available() is False): {cpu}, or run on a "
                "machine with a GPU and a CUDA build of torch."
            )
            raise ValueError(msg)
        n_gpus = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n_gpus:
            msg = f"{given} but there are {n_gpus} CUDA device(s): use 'cuda' or 'cuda:<index>', index below {n_gpus}."
            raise ValueError(msg)
    elif dev.type != "cpu":
        msg = f"{given}: CS-CORE computes in float64, which it runs on 'cuda' or 'cpu' devices only; use one, or {cpu}."
        raise ValueError(msg)
    return dev


def device_label(device: Any) -> str | None:
    """How a ``device`` argument is recorded (``uns[...]['params']``): ``None``, or the device's name."""
    return None if device is None else str(device)


@dataclass(frozen=True, eq=False)
class CSCoreFit:
    """Estimates of :func:`cscore_irls` for ``p`` genes (float64 arrays).

    Attributes
    ----------
    mean
        ``mu_j``, latent mean expression (per unit of sequencing depth), shape ``(p,)``.
    variance
        ``sigma_jj``, latent variance, shape ``(p,)``; non-positive for genes without detectable biological variation.
    covariance
        ``sigma_jk`` by weighted least squares, ``(p, p)``; the diagonal holds ``variance``.
    correlation
        ``sigma_jk / sqrt(sigma_jj sigma_kk)``, ``(p, p)``, post-processed as the reference: rows and columns of
        ``flagged`` genes set to 0, clipped to ``[-1, 1]``, diagonal 1.
    statistic
        Test statistic of ``H0: sigma_jk = 0``, asymptotically standard normal, ``(p, p)``.
    pvalue
        Two-sided p-values of ``statistic``, ``(p, p)``, diagonal 0 (a gene is always "co-expressed" with itself).
    flagged
        Genes with ``variance <= 0``, shape ``(p,)``.
    n_iter
        IRLS iterations run.
    converged
        Whether the IRLS met its tolerance within ``max_iter`` iterations.
    """

    mean: np.ndarray
    variance: np.ndarray
    covariance: np.ndarray
    correlation: np.ndarray
    statistic: np.ndarray
    pvalue: np.ndarray
    flagged: np.ndarray
    n_iter: int
    converged: bool


@dataclass(frozen=True, eq=False)
class CSCoreResult:
    """Result of :func:`~musegnn_sc.pp.cscore`, labelled by gene.

    Attributes
    ----------
    correlation
        CS-CORE co-expression estimates (genes x genes), diagonal 1.
    pvalue
        p-values of the test of no co-expression (adjusted if ``correction`` was given), diagonal 0.
    statistic
        The test statistics (asymptotically standard normal under no co-expression).
    mean
        Latent mean expression per unit of sequencing depth.
    variance
        Latent (biological) variance; genes with ``variance <= 0`` have correlation 0 with every other gene.
    flagged
        Genes with ``variance <= 0``.
    converged
        Whether the IRLS converged.

    Examples
    --------
    >>> import musegnn_sc as msg
    >>> rna = msg.datasets.toy_mudata(seed=0)["rna_heart_1"]
    >>> res = msg.pp.cscore(rna, genes=rna.var_names[:20])
    >>> res.correlation.iloc[:3, :3]
    >>> res.flagged.sum(), res.converged
    """

    correlation: pd.DataFrame
    pvalue: pd.DataFrame
    statistic: pd.DataFrame
    mean: pd.Series
    variance: pd.Series
    flagged: pd.Series
    converged: bool


# --------------------------------------------------------------------------------------------------------------------
# numba kernels. The weight of a cell of depth s for a gene of mean mu, with kappa = 1 / median(theta), is the working
# variance of its count, w = s mu + s^2 mu^2 kappa, replaced by 1 where it is not positive (genes without counts);
# the variance step weighs by h = w^2. Count blocks arrive as CSR pieces: rows ``ridx`` of (data, indices, indptr),
# with ``colmap`` mapping stored column indices to analysed genes (-1: not analysed).
# --------------------------------------------------------------------------------------------------------------------


@numba.njit(cache=True, error_model="numpy", inline="always")
def _weight(s, mu, kappa):  # pragma: no cover - compiled
    t = s * mu
    w = t + kappa * t * t
    return w if w > 0.0 else 1.0


@numba.njit(cache=True, error_model="numpy", inline="always")
def _model_variance(s, mu, sigma):  # pragma: no cover - compiled
    v = s * mu + s * s * sigma
    return v if v > 0.0 else 1.0


@numba.njit(cache=True, error_model="numpy")
def _accumulate_tables(data, indices, indptr, ridx, colmap, groups, T, Q):  # pragma: no cover - compiled
    """Add counts and squared counts into the depth tables ``T[group, gene]`` and ``Q[group, gene]``."""
    for ii in range(len(ridx)):
        i = ridx[ii]
        g = groups[ii]
        for k in range(indptr[i], indptr[i + 1]):
            j = colmap[indices[k]]
            if j >= 0:
                x = np.float64(data[k])
                T[g, j] += x
                Q[g, j] += x * x


@numba.njit(cache=True, error_model="numpy")
def _csr_sums(data, indices, indptr, ridx, colmap, s_rows, mu, kappa, step, out):  # pragma: no cover - compiled
    """Add the count terms of the IRLS sums of one block of cells (nonzeros only) to ``out[0:3]``.

    Rows of ``out``: 0 = sum s x / w, 1 = sum s^2 x^2 / h, 2 = sum s^3 x / h (unit weights for the OLS start).
    """
    for ii in range(len(ridx)):
        i = ridx[ii]
        s = s_rows[ii]
        for k in range(indptr[i], indptr[i + 1]):
            j = colmap[indices[k]]
            if j < 0:
                continue
            x = np.float64(data[k])
            if step == _OLS:
                out[0, j] += s * x
                out[1, j] += s * s * x * x
                out[2, j] += s * s * s * x
            elif step == _MEAN:
                out[0, j] += s * x / _weight(s, mu[j], kappa)
            else:
                w = _weight(s, mu[j], kappa)
                out[1, j] += s * s * x * x / (w * w)
                out[2, j] += s * s * s * x / (w * w)


@numba.njit(cache=True, error_model="numpy")
def _group_sums(T, Q, u, c, mu, kappa, step, out):  # pragma: no cover - compiled
    """Add the IRLS sums over depth groups (depth ``u``, ``c`` cells) to ``out``.

    Depth-only terms always (row 3 = sum c s^2 / w for the mean step, sum c s^4 / h for the variance step; row 4 =
    sum c s^2 (s^2 mu^2 - s mu) / h); the count terms of rows 0-2 (see :func:`_csr_sums`) too when the tables
    ``T``, ``Q`` have one row per group (pass zero rows when the IRLS streams over cells instead). Serial: it is
    ``O(groups x genes)``, cheap next to the Gram products, and threads would mostly wait for one another here.
    """
    with_tables = T.shape[0] == len(u)
    for k in range(len(u)):
        s = u[k]
        cs2 = c[k] * s * s
        # Inner loops over contiguous genes with the branches outside them, so that they vectorise.
        if step == _MEAN and with_tables:
            for j in range(len(mu)):
                iw = 1.0 / _weight(s, mu[j], kappa)
                out[0, j] += s * T[k, j] * iw
                out[3, j] += cs2 * iw
        elif step == _MEAN:
            for j in range(len(mu)):
                out[3, j] += cs2 / _weight(s, mu[j], kappa)
        elif with_tables:
            for j in range(len(mu)):
                t = s * mu[j]
                w = _weight(s, mu[j], kappa)
                ih = 1.0 / (w * w)
                out[1, j] += s * s * Q[k, j] * ih
                out[2, j] += s * s * s * T[k, j] * ih
                out[3, j] += cs2 * s * s * ih
                out[4, j] += cs2 * (t * t - t) * ih
        else:
            for j in range(len(mu)):
                t = s * mu[j]
                w = _weight(s, mu[j], kappa)
                ih = 1.0 / (w * w)
                out[3, j] += cs2 * s * s * ih
                out[4, j] += cs2 * (t * t - t) * ih


@numba.njit(cache=True, error_model="numpy")
def _residual_row(data, indices, lo, hi, colmap, s, mu, sigma, kappa, P_row, R_row):  # pragma: no cover - compiled
    for j in range(len(mu)):
        t = s * mu[j]
        P_row[j] = -s * t / _weight(s, mu[j], kappa)
        R_row[j] = -s * t / _model_variance(s, mu[j], sigma[j])
    for k in range(lo, hi):
        j = colmap[indices[k]]
        if j >= 0:
            r = s * (np.float64(data[k]) - s * mu[j])
            P_row[j] = r / _weight(s, mu[j], kappa)
            R_row[j] = r / _model_variance(s, mu[j], sigma[j])


@numba.njit(cache=True, error_model="numpy", parallel=True)
def _residual_rows(data, indices, indptr, ridx, colmap, s_rows, mu, sigma, kappa, P, R):  # pragma: no cover
    """Fill ``P = s (x - s mu) / w`` and ``R = s (x - s mu) / v`` (``v = s mu + s^2 sigma``) for a block of cells.

    ``P^T P`` and ``R^T R`` are the numerators of the covariance and of the test statistic. Each row is first
    written for zero counts, then the nonzeros overwrite their entries: the counts are never densified.
    """
    for ii in numba.prange(len(ridx)):
        i = ridx[ii]
        _residual_row(data, indices, indptr[i], indptr[i + 1], colmap, s_rows[ii], mu, sigma, kappa, P[ii], R[ii])


@numba.njit(cache=True, error_model="numpy")
def _residual_rows_serial(data, indices, indptr, ridx, colmap, s_rows, mu, sigma, kappa, P, R):  # pragma: no cover
    """:func:`_residual_rows` without threads, for small blocks (starting threads costs more than it saves)."""
    for ii in range(len(ridx)):
        i = ridx[ii]
        _residual_row(data, indices, indptr[i], indptr[i + 1], colmap, s_rows[ii], mu, sigma, kappa, P[ii], R[ii])


@numba.njit(cache=True, error_model="numpy")
def _depth_row(s, a, mu, sigma, kappa, B_row, Bv_row):  # pragma: no cover - compiled
    for j in range(len(mu)):
        B_row[j] = a / _weight(s, mu[j], kappa)
        Bv_row[j] = a / _model_variance(s, mu[j], sigma[j])


@numba.njit(cache=True, error_model="numpy", parallel=True)
def _depth_rows(u, sqrt_c, mu, sigma, kappa, B, Bv):  # pragma: no cover - compiled
    """Rows ``sqrt(c) s^2 / w`` and ``sqrt(c) s^2 / v``, whose Gram matrices are the two denominators."""
    for k in numba.prange(len(u)):
        _depth_row(u[k], sqrt_c[k] * u[k] * u[k], mu, sigma, kappa, B[k], Bv[k])


@numba.njit(cache=True, error_model="numpy")
def _depth_rows_serial(u, sqrt_c, mu, sigma, kappa, B, Bv):  # pragma: no cover - compiled
    for k in range(len(u)):
        _depth_row(u[k], sqrt_c[k] * u[k] * u[k], mu, sigma, kappa, B[k], Bv[k])


@numba.njit(cache=True, error_model="numpy")
def _finish_row(num_cov, den_cov, num_test, den_test, sigma, j):  # pragma: no cover - compiled
    p = len(sigma)
    for k in range(j, p):
        cov = num_cov[j, k] / den_cov[j, k]
        stat = num_test[j, k] / np.sqrt(den_test[j, k])
        if j == k:
            cov = sigma[j]
            rho = 1.0
            pval = 0.0
        else:
            if sigma[j] > 0.0 and sigma[k] > 0.0:
                rho = min(max(cov / np.sqrt(sigma[j] * sigma[k]), -1.0), 1.0)
            else:
                rho = 0.0
            pval = math.erfc(abs(stat) / _SQRT2)
        num_cov[j, k] = num_cov[k, j] = cov
        den_cov[j, k] = den_cov[k, j] = rho
        num_test[j, k] = num_test[k, j] = stat
        den_test[j, k] = den_test[k, j] = pval


@numba.njit(cache=True, error_model="numpy", parallel=True)
def _finish(num_cov, den_cov, num_test, den_test, sigma):  # pragma: no cover - compiled
    """Turn the upper triangles of the four Gram matrices into full symmetric results, in place.

    Overwrites ``num_cov`` with the covariance (diagonal: ``sigma``), ``den_cov`` with the correlation (post-processed
    as the reference: genes with ``sigma <= 0`` get 0, clipped to [-1, 1], diagonal 1), ``num_test`` with the test
    statistic and ``den_test`` with its two-sided p-value ``erfc(|T| / sqrt 2) = 2 sf(|T|)``, which, unlike
    ``2 (1 - cdf)``, does not round to 0 for |T| > 8.3. Entry (j, k), j <= k, is read and both (j, k) and (k, j)
    written by the same task, so working in place is safe.
    """
    p = len(sigma)
    # Row j has p - j entries: pairing row j with row p - 1 - j gives every task the same amount of work.
    for j in numba.prange((p + 1) // 2):
        _finish_row(num_cov, den_cov, num_test, den_test, sigma, j)
        if p - 1 - j != j:
            _finish_row(num_cov, den_cov, num_test, den_test, sigma, p - 1 - j)


@numba.njit(cache=True, error_model="numpy")
def _finish_serial(num_cov, den_cov, num_test, den_test, sigma):  # pragma: no cover - compiled
    for j in range(len(sigma)):
        _finish_row(num_cov, den_cov, num_test, den_test, sigma, j)


def _threaded(n_elements: int) -> bool:
    """Use the threaded kernels only for enough work: waking threads costs about as much as 1e5 element updates."""
    return n_elements >= _MIN_THREADED


# --------------------------------------------------------------------------------------------------------------------
# Array kernel
# --------------------------------------------------------------------------------------------------------------------


def _kernel_values(values: np.ndarray) -> np.ndarray:
    """Count values as the kernels take them: float32 and float64 as they are (no copy), anything else as float64.

    The kernels compute in float64 either way; limiting them to two value types bounds numba's compilations.
    """
    if values.dtype in (np.float32, np.float64):
        return values
    return values.astype(np.float64)


def _block_reader(X, cols: np.ndarray, rows: np.ndarray | None, chunk_size: int | None):
    """Column map and a re-iterable source of CSR pieces ``(data, indices, indptr, ridx, cells)``.

    ``ridx`` are the rows of the piece to use and ``cells`` their indices among all cells. An in-memory CSR matrix is
    read in place (slices of its arrays, genes selected through the column map), since scipy's column indexing would
    copy each block; other sparse formats are converted to CSR once; any other input goes through
    :func:`~musegnn_sc._chunks.iter_row_chunks`.
    """
    if sparse.issparse(X) and X.format != "csr":
        # Column-major (or coordinate) input: convert the analysed genes to CSR once, not once per pass.
        X = sparse.csr_matrix(sparse.csc_matrix(X)[:, cols])
        X.sum_duplicates()
        cols = np.arange(len(cols))
    n_obs, n_vars = X.shape
    step = n_obs if chunk_size is None else max(int(chunk_size), 1)
    if sparse.issparse(X) and X.format == "csr" and X.has_canonical_format:
        colmap = np.full(n_vars, -1, dtype=np.intp)
        colmap[cols] = np.arange(len(cols))

        def read() -> Iterator[tuple]:
            for start in range(0, n_obs, step):
                stop = min(start + step, n_obs)
                ridx = np.arange(stop - start) if rows is None else np.flatnonzero(rows[start:stop])
                if len(ridx) == 0:
                    continue
                lo, hi = X.indptr[start], X.indptr[stop]
                data = _kernel_values(X.data[lo:hi])
                yield data, X.indices[lo:hi], X.indptr[start : stop + 1] - lo, ridx, ridx + start

        return colmap, read

    select = None if np.array_equal(cols, np.arange(n_vars)) else cols
    colmap = np.arange(len(cols))

    def read() -> Iterator[tuple]:
        for cells, block in iter_row_chunks(X, chunk_size, cols=select, rows=rows, dense=False):
            csr = sparse.csr_matrix(block)
            csr.data = _kernel_values(csr.data)
            if not csr.has_canonical_format:
                # The kernels overwrite entries per nonzero, so duplicates must be summed (on a copy: never the input).
                csr = csr.copy()
                csr.sum_duplicates()
            yield csr.data, csr.indices, csr.indptr, np.arange(csr.shape[0]), cells

    return colmap, read


def _syrk_update(acc: np.ndarray, block: np.ndarray) -> None:
    """``acc += block^T block`` in the upper triangle (``acc`` Fortran-ordered; ``block`` C-ordered, not copied)."""
    # A C-ordered (m, p) block is a Fortran-ordered (p, m) matrix, which dsyrk reads in place; a symmetric rank-k
    # update costs half the flops of a general product.
    blas.dsyrk(1.0, block.T, beta=1.0, c=acc, trans=0, lower=0, overwrite_c=1)


def _median_theta(mu: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, float]:
    """``theta = mu^2 / sigma`` and the median of its positive values (the IRLS's common overdispersion)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = mu**2 / sigma
    positive = theta[theta > 0]
    if positive.size == 0:
        msg = (
            "CS-CORE found no gene with positive biological variance (every variance estimate is <= 0), so its "
            "weights are undefined. Use more cells, or genes with more counts (e.g. highly variable genes)."
        )
        raise ValueError(msg)
    return theta, float(np.median(positive))


def _log_theta_change(theta: np.ndarray, theta_prev: np.ndarray) -> float:
    """Largest change of ``log theta`` over genes with positive ``theta`` before and after, as the reference.

    The reference sets negative ``theta`` to ``+inf`` in place before comparing, so a gene whose variance turns from
    negative to positive counts as not converged (infinite change); we keep that rule. Genes at ``+inf`` on both
    sides (variance exactly 0) have not changed and are skipped.
    """
    prev = np.where(theta_prev < 0, np.inf, theta_prev)
    both = (theta > 0) & (prev > 0)
    with np.errstate(invalid="ignore"):
        change = np.abs(np.log(theta[both]) - np.log(prev[both]))
    change = change[~np.isnan(change)]
    return float(change.max()) if change.size else 0.0


def _use_tables(n_groups: int, chunk_size: int | None) -> bool:
    """Whether the per-depth count tables fit in the memory of :data:`_TABLE_BLOCKS` blocks of cells."""
    return chunk_size is None or n_groups <= _TABLE_BLOCKS * max(int(chunk_size), 1)


class _IrlsSums:
    """Per-gene sums over cells of the IRLS terms, as rows of a (5, p) array (see :func:`_group_sums`).

    Count tables by depth make every IRLS iteration independent of the number of cells; they are built (one pass)
    when they take no more memory than a few blocks of cells. Otherwise the count terms are summed over the blocks
    of cells at every call.
    """

    def __init__(self, blocks, colmap, depth, u, c, cell_group, p, chunk_size):
        self.blocks, self.colmap, self.depth, self.u, self.c, self.p = blocks, colmap, depth, u, c, p
        self.use_tables = _use_tables(len(u), chunk_size)
        self.T = self.Q = np.zeros((0, p))
        if self.use_tables:
            self.T, self.Q = np.zeros((len(u), p)), np.zeros((len(u), p))
            for data, indices, indptr, ridx, cells in blocks():
                _accumulate_tables(data, indices, indptr, ridx, colmap, cell_group[cells], self.T, self.Q)

    def __call__(self, step: int, mu: np.ndarray, kappa: float) -> np.ndarray:
        out = np.zeros((5, self.p))
        u = self.u
        if step == _OLS and self.use_tables:
            out[0], out[1], out[2] = u @ self.T, u**2 @ self.Q, u**3 @ self.T
        elif step != _OLS:
            _group_sums(self.T, self.Q, u, self.c, mu, kappa, step, out)
        if not self.use_tables:
            for data, indices, indptr, ridx, cells in self.blocks():
                _csr_sums(data, indices, indptr, ridx, self.colmap, self.depth[cells], mu, kappa, step, out)
        return out

    def release(self) -> None:
        """Free the tables before the final pass."""
        self.T = self.Q = np.zeros((0, self.p))


def cscore_irls(
    X,
    depth: np.ndarray,
    *,
    cols: np.ndarray | None = None,
    rows: np.ndarray | None = None,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
    max_iter: int = 10,
    tol: float = 0.05,
    device: str | torch.device | None = None,
) -> CSCoreFit:
    """CS-CORE estimates, test statistics and p-values for all pairs of the chosen genes.

    Parameters
    ----------
    X
        Cells x genes raw counts: dense array, scipy sparse matrix, backed AnnData matrix, or any object with
        ``shape`` and row slicing (see :func:`musegnn_sc._chunks.iter_row_chunks`). It is read one block of cells at
        a time: twice in all when the distinct depths fit in ``2 * chunk_size`` rows, else ``2 + 2 * n_iter`` times.
    depth
        Sequencing depth of every cell (total counts over *all* genes), length ``X.shape[0]``.
    cols
        Integer indices of the genes to analyse; ``None`` uses all.
    rows
        Boolean mask of the cells to use; ``None`` uses all. Their depths must be positive.
    chunk_size
        Cells per block (``None``: all at once). Results do not depend on it beyond floating-point summation order.
    max_iter
        Maximum number of IRLS iterations (the reference loop allows up to 11).
    tol
        The IRLS stops when ``max_j |log theta_j - log theta_j^prev| <= tol``, ``theta_j = mu_j^2 / sigma_jj``.
    device
        ``None``: numba kernels and BLAS on the CPU. A torch device (``'cuda'``, ``'cpu'``, ...): the tables, IRLS
        sums and Gram products in torch float64 on it (see :func:`cscore`).

    Returns
    -------
    The estimates, see :class:`CSCoreFit`.
    """
    torch_device = resolve_device(device)
    n_obs, n_vars = X.shape
    depth = np.asarray(depth, dtype=np.float64).ravel()
    if depth.shape[0] != n_obs:
        msg = f"`depth` has {depth.shape[0]} entries but X has {n_obs} cells."
        raise ValueError(msg)
    cols = np.arange(n_vars) if cols is None else np.asarray(cols, dtype=np.intp).ravel()
    p = len(cols)
    if p == 0:
        msg = "No genes to analyse: `cols` is empty."
        raise ValueError(msg)
    if rows is not None:
        rows = np.asarray(rows, dtype=bool).ravel()
        if rows.shape[0] != n_obs:
            msg = f"`rows` must be a boolean mask over the {n_obs} cells, got length {rows.shape[0]}."
            raise ValueError(msg)
    s_used = depth if rows is None else depth[rows]
    if s_used.size < 2:
        msg = f"CS-CORE needs at least 2 cells, got {s_used.size}."
        raise ValueError(msg)
    if not (np.isfinite(s_used).all() and (s_used > 0).all()):
        msg = "Sequencing depths must be finite and positive; exclude cells with zero counts through `rows=`."
        raise ValueError(msg)

    # Cells grouped by depth: unique depths u, the group of each used cell, and group sizes c.
    u, groups, c = np.unique(s_used, return_inverse=True, return_counts=True)
    c = c.astype(np.float64)
    cell_group = np.full(n_obs, -1, dtype=np.intp)
    cell_group[slice(None) if rows is None else rows] = groups
    colmap, blocks = _block_reader(X, cols, rows, chunk_size)
    on = "" if torch_device is None else f" on {torch_device}"
    t0 = logg.start(f"CS-CORE on {s_used.size} cells x {p} genes ({len(u)} distinct depths){on}")

    if torch_device is None:
        irls_sums = _IrlsSums(blocks, colmap, depth, u, c, cell_group, p, chunk_size)
    else:
        from ._cscore_torch import TorchIrls

        irls_sums = TorchIrls(
            blocks, colmap, depth, u, c, cell_group, p, use_tables=_use_tables(len(u), chunk_size), device=torch_device
        )

    # 1. OLS start: mu = sum s x / sum s^2, sigma = sum s^2 ((x - s mu)^2 - s mu) / sum s^4 (expanded in powers of x).
    S2, S3, S4 = (float(np.dot(c, u**k)) for k in (2, 3, 4))
    sx, s2x2, s3x = irls_sums(_OLS, np.zeros(p), 0.0)[:3]
    mu = sx / S2
    sigma = (s2x2 - 2 * mu * s3x + mu**2 * S4 - mu * S3) / S4
    theta, theta_med = _median_theta(mu, sigma)

    # 2. IRLS: mean with weights 1/w, then variance with weights 1/h, w = s mu + s^2 mu^2 / median(theta), h = w^2.
    n_iter, delta = 0, np.inf
    while n_iter < max_iter and delta > tol:
        kappa = 1.0 / theta_med
        sums = irls_sums(_MEAN, mu, kappa)
        mu = sums[0] / sums[3]
        sums = irls_sums(_VAR, mu, kappa)
        sigma = (sums[1] - 2 * mu * sums[2] + sums[4]) / sums[3]
        theta_prev = theta
        theta, theta_med = _median_theta(mu, sigma)
        delta = _log_theta_change(theta, theta_prev)
        n_iter += 1
    irls_sums.release()
    converged = bool(delta <= tol)
    if not converged:
        warnings.warn(
            f"CS-CORE's IRLS did not converge in {max_iter} iterations (largest change of log(mu^2/sigma) "
            f"{delta:.3g} > tol={tol}); the estimates are those of the last iteration. Check for genes with very few "
            "counts, or raise `max_iter`. (The reference implementation reports convergence in this case.)",
            UserWarning,
            stacklevel=2,
        )

    # 3-4. Covariance by WLS with the final w, and test statistic with the model variance v = s mu + s^2 sigma:
    # numerators P^T P and R^T R over blocks of cells, denominators B^T B over depth groups.
    kappa = 1.0 / theta_med
    if torch_device is None:
        num_cov, num_test, den_cov, den_test = _gram_products(blocks, colmap, depth, u, c, mu, sigma, kappa, p)
    else:
        # Full symmetric matrices in C order: their transposes are Fortran-ordered views, the layout _finish takes.
        num_cov, num_test, den_cov, den_test = (m.T for m in irls_sums.gram_products(mu, sigma, kappa))
    del irls_sums

    # 5. Covariance, correlation, statistic and p-values, in place. The matrices are symmetric, so the transposes
    # are the same matrices in C order.
    (_finish if _threaded(p * p) else _finish_serial)(num_cov, den_cov, num_test, den_test, sigma)
    flagged = ~(sigma > 0)
    if flagged.any():
        logg.logger.info("    %d gene(s) with variance <= 0: their correlations are set to 0", int(flagged.sum()))
    logg.finish(f"{n_iter} IRLS iteration(s), converged={converged}", t0)
    return CSCoreFit(
        mean=mu,
        variance=sigma,
        covariance=num_cov.T,
        correlation=den_cov.T,
        statistic=num_test.T,
        pvalue=den_test.T,
        flagged=flagged,
        n_iter=n_iter,
        converged=converged,
    )


def _gram_products(blocks, colmap, depth, u, c, mu, sigma, kappa, p) -> tuple[np.ndarray, ...]:
    """The upper triangles of ``P^T P``, ``R^T R``, ``B^T B`` and ``B_v^T B_v`` (Fortran-ordered ``(p, p)``)."""
    n_used = float(c.sum())
    num_cov, num_test, den_cov, den_test = (np.zeros((p, p), order="F") for _ in range(4))
    # Rows go through the rank-k updates in slices of at most _SYRK_ROWS: enough for full BLAS speed, and the two
    # float64 buffers (2 x _SYRK_ROWS x p) do not grow with chunk_size.
    n_buf = min(_SYRK_ROWS, int(n_used))
    P_buf, R_buf = np.empty((n_buf, p)), np.empty((n_buf, p))
    for data, indices, indptr, ridx, cells in blocks():
        s_rows = depth[cells]
        for lo in range(0, len(ridx), n_buf):
            hi = min(lo + n_buf, len(ridx))
            P, R = P_buf[: hi - lo], R_buf[: hi - lo]  # leading rows of a C-ordered buffer: still C-contiguous
            residual_rows = _residual_rows if _threaded(P.size) else _residual_rows_serial
            residual_rows(data, indices, indptr, ridx[lo:hi], colmap, s_rows[lo:hi], mu, sigma, kappa, P, R)
            _syrk_update(num_cov, P)
            _syrk_update(num_test, R)
    sqrt_c = np.sqrt(c)
    for lo in range(0, len(u), n_buf):
        hi = min(lo + n_buf, len(u))
        B, Bv = P_buf[: hi - lo], R_buf[: hi - lo]
        (_depth_rows if _threaded(B.size) else _depth_rows_serial)(u[lo:hi], sqrt_c[lo:hi], mu, sigma, kappa, B, Bv)
        _syrk_update(den_cov, B)
        _syrk_update(den_test, Bv)
    return num_cov, num_test, den_cov, den_test


def adjust_pvalues(pvalue: np.ndarray, method: Literal["fdr_bh"] | None = None) -> np.ndarray:
    """Multiple-testing correction of a symmetric gene x gene p-value matrix.

    Parameters
    ----------
    pvalue
        Symmetric ``(p, p)`` p-values.
    method
        ``None`` returns a copy unchanged; ``'fdr_bh'`` applies Benjamini-Hochberg over the ``p (p - 1) / 2`` gene
        pairs of the upper triangle.

    Returns
    -------
    Symmetric adjusted p-values with diagonal 0 (self-edges are kept, as in the reference graphs).
    """
    pvalue = np.asarray(pvalue, dtype=np.float64)
    if method is None:
        return pvalue.copy()
    if method != "fdr_bh":
        msg = f"Unknown multiple-testing correction {method!r}: use None or 'fdr_bh'."
        raise ValueError(msg)
    p = pvalue.shape[0]
    iu = np.triu_indices(p, 1)
    pairs = pvalue[iu]
    m = pairs.size
    order = np.argsort(pairs, kind="stable")
    scaled = pairs[order] * m / np.arange(1, m + 1)
    # q_(k) = min_{l >= k} p_(l) m / l: a running minimum from the largest p-value down.
    scaled = np.minimum.accumulate(scaled[::-1])[::-1]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(scaled, 1.0)
    out = np.zeros((p, p))
    out[iu] = adjusted
    out += out.T
    return out


# --------------------------------------------------------------------------------------------------------------------
# AnnData entry point
# --------------------------------------------------------------------------------------------------------------------


def _gene_indices(adata: AnnData, genes) -> np.ndarray:
    """Integer indices of ``genes`` (names or boolean mask over ``var_names``; ``None``: all genes)."""
    if genes is None:
        return np.arange(adata.n_vars)
    if isinstance(genes, str):
        genes = [genes]
    arr = np.asarray(genes)
    if arr.dtype == bool:
        if arr.shape != (adata.n_vars,):
            msg = f"A boolean `genes` mask must have one entry per gene ({adata.n_vars}), got shape {arr.shape}."
            raise ValueError(msg)
        return np.flatnonzero(arr)
    names = pd.Index(arr)
    if not names.is_unique:
        msg = "`genes` lists some genes more than once: pass each gene name once."
        raise ValueError(msg)
    idx = adata.var_names.get_indexer(names)
    missing = names[idx < 0]
    if len(missing):
        shown = ", ".join(map(repr, missing[:5])) + (" ..." if len(missing) > 5 else "")
        msg = (
            f"{len(missing)} of the requested genes are not in `adata.var_names`: {shown}. "
            "Check the spelling and the identifier type (symbols vs Ensembl IDs)."
        )
        raise KeyError(msg)
    return idx.astype(np.intp)


def _checked_depth(X, *, layer: str | None, chunk_size: int | None) -> np.ndarray:
    """Validate the counts block by block (no full copy, backed matrices too) and return the total per cell."""
    depth = np.empty(X.shape[0], dtype=np.float64)
    for idx, block in iter_row_chunks(X, chunk_size, dense=False):
        check_counts(block, layer=layer)
        depth[idx] = np.asarray(block.sum(axis=1, dtype=np.float64)).ravel()
    return depth


def _obs_depth(adata: AnnData, depth_key: str) -> np.ndarray:
    if depth_key not in adata.obs:
        msg = (
            f"`adata.obs` has no column {depth_key!r}. Pass `depth_key=None` to use the total counts per cell, or the "
            "name of the column that holds sequencing depth."
        )
        raise KeyError(msg)
    depth = pd.to_numeric(adata.obs[depth_key], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(depth).all() or (depth < 0).any():
        msg = (
            f"`adata.obs[{depth_key!r}]` must hold finite, non-negative sequencing depths. Fix the column, or pass "
            "`depth_key=None` to use the total counts per cell."
        )
        raise ValueError(msg)
    return depth


@doc_params(adata=doc_adata_counts, layer=doc_layer, chunk_size=doc_chunk_size, device=doc_device)
def cscore(
    adata: AnnData,
    *,
    genes: Sequence[str] | np.ndarray | None = None,
    layer: str | None = None,
    depth_key: str | None = None,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
    correction: Literal["fdr_bh"] | None = None,
    device: str | Any | None = None,  # or a torch.device (torch is not imported at module level: see resolve_device)
) -> CSCoreResult:
    r"""Gene co-expression by CS-CORE :cite:`su2023cscore`.

    CS-CORE models the count of gene :math:`j` in cell :math:`i` as :math:`x_{{ij}} \sim
    \mathrm{{Poisson}}(s_i z_{{ij}})`, where :math:`s_i` is the cell's sequencing depth and :math:`z_{{ij}}` the latent
    expression with mean :math:`\mu_j` and covariance :math:`\sigma_{{jk}}`. From the moment equations
    :math:`E\,x_{{ij}} = s_i\mu_j`, :math:`E(x_{{ij}} - s_i\mu_j)^2 = s_i\mu_j + s_i^2\sigma_{{jj}}` and
    :math:`E(x_{{ij}} - s_i\mu_j)(x_{{ik}} - s_i\mu_k) = s_i^2\sigma_{{jk}}`, means and variances are estimated by
    iteratively re-weighted least squares over cells, then covariances by weighted least squares, which separates
    biological co-variation from the Poisson measurement noise that depth variation inflates. The correlation is
    :math:`\sigma_{{jk}} / \sqrt{{\sigma_{{jj}}\sigma_{{kk}}}}`; the test statistic of :math:`\sigma_{{jk}} = 0` is
    asymptotically standard normal and its p-values are two-sided.

    This is the published algorithm (Su et al. 2023, Nat Commun 14:4846; the authors' Python implementation is what
    MuSe-GNN used to build its graphs) with the same estimates, reorganised for speed: cells are grouped by depth and
    processed in blocks, so the matrix may be sparse or backed and is never densified whole. ``adata`` is not
    modified.

    Parameters
    ----------
    {adata}
    genes
        Genes to analyse, as names or a boolean mask over ``var_names``; ``None`` uses all genes. Cost grows with
        the square of the number of genes: pass e.g. the highly variable genes.
    {layer}
    depth_key
        Column of ``adata.obs`` with each cell's sequencing depth. ``None`` uses the total counts per cell over
        *all* genes of the matrix (not only ``genes``), as CS-CORE requires.
    {chunk_size}
    correction
        Multiple-testing correction of the p-values: ``None`` (as MuSe-GNN) or ``'fdr_bh'`` (Benjamini-Hochberg over
        gene pairs, as the CS-CORE authors suggest).
    {device}

    Returns
    -------
    Correlations, p-values and test statistics as gene x gene :class:`~pandas.DataFrame`\ s, with the means,
    variances and convergence flag (see :class:`CSCoreResult`).

    Examples
    --------
    >>> import musegnn_sc as msg
    >>> res = msg.pp.cscore(adata, genes=adata.var_names[adata.var["highly_variable"]])  # doctest: +SKIP
    >>> edges = res.pvalue < 0.005  # doctest: +SKIP
    >>> on_gpu = msg.pp.cscore(adata, genes=adata.var_names[:2000], device="cuda")  # doctest: +SKIP
    """
    if correction not in (None, "fdr_bh"):
        msg = f"Unknown multiple-testing correction {correction!r}: use None or 'fdr_bh'."
        raise ValueError(msg)
    device = resolve_device(device)
    check_shape(adata, what="dataset", min_obs=2)
    check_unique_var_names(adata, what="dataset")
    X = get_matrix(adata, layer)
    cols = _gene_indices(adata, genes)
    if len(cols) == 0:
        msg = "`genes` selects no gene: pass at least one gene name (two or more for co-expression)."
        raise ValueError(msg)
    if len(cols) > _MANY_GENES:
        warnings.warn(
            f"CS-CORE on {len(cols)} genes: time and memory grow with the square of the number of genes "
            f"({len(cols)} x {len(cols)} matrices). Pass `genes=` (e.g. highly variable genes) to restrict it.",
            UserWarning,
            stacklevel=2,
        )
    depth = _checked_depth(X, layer=layer, chunk_size=chunk_size)
    if depth_key is not None:
        depth = _obs_depth(adata, depth_key)
    keep = nonzero_cells(depth, what="dataset")
    if keep.sum() < 2:
        msg = f"The dataset has {int(keep.sum())} cell(s) with counts; at least 2 are needed to estimate co-expression."
        raise ValueError(msg)
    fit = cscore_irls(X, depth, cols=cols, rows=None if keep.all() else keep, chunk_size=chunk_size, device=device)
    names = adata.var_names[cols]

    def frame(a: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(a, index=names.copy(), columns=names.copy())

    return CSCoreResult(
        correlation=frame(fit.correlation),
        pvalue=frame(adjust_pvalues(fit.pvalue, correction)),
        statistic=frame(fit.statistic),
        mean=pd.Series(fit.mean, index=names.copy(), name="mean"),
        variance=pd.Series(fit.variance, index=names.copy(), name="variance"),
        flagged=pd.Series(fit.flagged, index=names.copy(), name="flagged"),
        converged=fit.converged,
    )
