"""CS-CORE on a GPU: time ``device="cuda"`` on the CS-CORE authors' case, 44,721 cells x 5,000 genes, and check it.

The counts are the ``sim44k`` case of ``bench_cscore.py`` (simulated, CSR in memory, about 25% nonzero). The script
prints the GPU, times :func:`musegnn_sc.pp._cscore.cscore_irls` with ``device=`` (after a warm-up that starts CUDA
and cuBLAS), reports the device's and the process's peak memory, then runs the default CPU path (numba and BLAS, every
core of the machine) on the same counts and reports the largest differences and whether the p < 0.005 graphs are
identical. ``--stream-cells 1000000`` also streams that many cells x 5,000 genes from ``SimulatedCounts`` through the
GPU (host memory independent of the cells; the time includes generating the counts, reported apart).

Without a CUDA device (or without torch) it prints that it needs one and exits 0.

Usage: ``python benchmarks/gpu_check.py [--device cuda:0] [--repeats 3] [--no-cpu] [--stream-cells N]``.
About 1-2 minutes on one H100 with 16 CPU cores (most of it numba compiling on a fresh machine and the CPU
comparison); ``--stream-cells 1000000`` adds about 1-2 minutes of generating counts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

N_CELLS, N_GENES = 44_721, 5_000
AUTHORS = (143.0, 17.4)  # the authors' CS-CORE code on the 2-core build machine: seconds, GB


def _device(device: str, *, allow_cpu: bool):
    """torch and the device, or the reason there is none (``allow_cpu``: a CPU dry run of the script).

    The device is checked by :func:`musegnn_sc.pp._cscore.resolve_device`, as the package's ``device=`` options are.
    """
    from musegnn_sc.pp._cscore import resolve_device

    try:
        dev = resolve_device(device, option="--device", default="--device cpu --allow-cpu (a dry run)")
    except ValueError as err:
        return str(err).rstrip(".")
    if dev.type == "cuda" or (dev.type == "cpu" and allow_cpu):
        import torch

        return torch, dev
    return f"--device {device} is not a CUDA device"


class _Gpu:
    """The CUDA calls of the script (no-ops in a CPU dry run)."""

    def __init__(self, torch, dev) -> None:
        self.torch, self.dev, self.cuda = torch, dev, dev.type == "cuda"
        self.name = torch.cuda.get_device_name(dev) if self.cuda else "CPU (dry run)"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.dev)

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats(self.dev)

    def peak_gb(self) -> str:
        return f"{self.torch.cuda.max_memory_allocated(self.dev) / 1e9:.2f}" if self.cuda else "—"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="CUDA device (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed GPU runs (default: %(default)s)")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU run and the comparison")
    parser.add_argument("--stream-cells", type=int, default=0, help="also stream this many cells x 5,000 genes")
    parser.add_argument("--cells", type=int, default=N_CELLS, help=argparse.SUPPRESS)  # smaller: a dry run
    parser.add_argument("--allow-cpu", action="store_true", help=argparse.SUPPRESS)  # --device cpu: a dry run
    args = parser.parse_args(argv)

    found = _device(args.device, allow_cpu=args.allow_cpu)
    if isinstance(found, str):
        print(f"gpu_check: needs a CUDA device: {found}. Nothing measured.")
        return 0
    torch, dev = found
    gpu = _Gpu(torch, dev)
    n_cells = args.cells

    import numba
    from _memory import reset_peak, rss_gb
    from bench_cscore import SimulatedCounts

    import musegnn_sc
    from musegnn_sc._chunks import row_sums
    from musegnn_sc.pp._cscore import cscore_irls

    memory = f"{torch.cuda.get_device_properties(dev).total_memory / 1e9:.0f} GB" if gpu.cuda else "no GPU"
    print(
        f"GPU: {gpu.name} ({memory}), torch {torch.__version__}, CUDA {torch.version.cuda}; {os.cpu_count()} CPU "
        f"cores; musegnn_sc {musegnn_sc.__version__}.",
        flush=True,
    )

    t0 = time.perf_counter()
    X = SimulatedCounts(n_cells, N_GENES, seed=1, depth=0.5 * N_GENES).rows(0, n_cells)
    depth = np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()
    print(
        f"Counts: {n_cells:,} x {N_GENES:,} CSR, {X.nnz / np.prod(X.shape):.0%} nonzero, generated in "
        f"{time.perf_counter() - t0:.1f} s; {len(np.unique(depth)):,} distinct depths.",
        flush=True,
    )

    # Warm-up: numba kernels (the CPU path, and the shared final step) and the CUDA context, cuBLAS handles.
    warm = SimulatedCounts(600, 50, seed=9, depth=200.0)[0:600]
    for device in (None, dev):
        cscore_irls(warm, np.asarray(warm.sum(axis=1)).ravel(), device=device)
    gpu.sync()

    times = []
    gpu.reset_peak()
    before = rss_gb("VmRSS")
    reset_peak()
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        fit = cscore_irls(X, depth, device=dev)  # returns numpy: the device work is finished
        times.append(time.perf_counter() - t0)
    host_peak = rss_gb("VmHWM")
    rows = [
        (
            f"CS-CORE, torch float64 on {gpu.name}",
            f"{np.median(times):.2f} (min {min(times):.2f}, {len(times)} runs)",
            f"{host_peak:.2f} / {host_peak - before:.2f}",
            gpu.peak_gb(),
            f"{AUTHORS[0] / np.median(times):.0f}x",
            f"{(fit.pvalue < 0.005).mean():.3f}",
        )
    ]
    print(f"GPU runs: {', '.join(f'{t:.2f}' for t in times)} s; {fit.n_iter} IRLS iterations.", flush=True)

    notes = []
    if not args.no_cpu:
        reset_peak()
        before = rss_gb("VmRSS")
        t0 = time.perf_counter()
        cpu = cscore_irls(X, depth)
        cpu_s = time.perf_counter() - t0
        cpu_peak = rss_gb("VmHWM")
        rows.append(
            (
                f"CS-CORE, numba/BLAS on the CPU, {numba.get_num_threads()} threads (the default path)",
                f"{cpu_s:.2f}",
                f"{cpu_peak:.2f} / {cpu_peak - before:.2f}",
                "—",
                f"{AUTHORS[0] / cpu_s:.0f}x",
                f"{(cpu.pvalue < 0.005).mean():.3f}",
            )
        )
        off = ~np.eye(fit.pvalue.shape[0], dtype=bool)
        scale = np.maximum(np.abs(cpu.pvalue), 1e-300)
        notes.append(
            "GPU against CPU, largest differences: correlation "
            f"{np.abs(fit.correlation - cpu.correlation).max():.1e}, statistic "
            f"{np.abs(fit.statistic - cpu.statistic)[off].max():.1e}, p-value {np.abs(fit.pvalue - cpu.pvalue).max():.1e} "
            f"(relative {(np.abs(fit.pvalue - cpu.pvalue) / scale)[off].max():.1e}), mean "
            f"{(np.abs(fit.mean - cpu.mean) / np.abs(cpu.mean).clip(1e-300)).max():.1e} (relative); IRLS iterations "
            f"{fit.n_iter} / {cpu.n_iter}; p<0.005 graphs identical: {bool(((fit.pvalue < 0.005) == (cpu.pvalue < 0.005)).all())}."
        )
        del cpu
    del fit, X

    if args.stream_cells > 0:
        gen = SimulatedCounts(args.stream_cells, N_GENES, seed=2, depth=0.5 * N_GENES)
        gen[0:1000]  # compile the generator
        gen.seconds = 0.0
        gpu.reset_peak()
        reset_peak()
        before = rss_gb("VmRSS")
        t0 = time.perf_counter()
        s = row_sums(gen)
        fit = cscore_irls(gen, s, device=dev)
        seconds = time.perf_counter() - t0
        host_peak = rss_gb("VmHWM")
        rows.append(
            (
                f"streamed {args.stream_cells:,} x {N_GENES:,} (generated on the fly), torch float64 on {gpu.name}",
                f"{seconds:.1f} (of which {gen.seconds:.0f} generating counts)",
                f"{host_peak:.2f} / {host_peak - before:.2f}",
                gpu.peak_gb(),
                "—",
                f"{(fit.pvalue < 0.005).mean():.3f}",
            )
        )

    print(
        f"\n{n_cells:,} cells x {N_GENES:,} genes unless stated. 'authors / this': the authors' CS-CORE code took "
        f"{AUTHORS[0]:g} s and {AUTHORS[1]:g} GB on the 2-core build machine (anchor_measurements.md), not this one.\n"
    )
    print(
        "| run | wall time (s) | host peak memory (GB): process / computation | GPU peak (GB) | authors / this "
        "| edges p<0.005 |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    for note in notes:
        print(f"\n- {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
