"""MuSe-GNN training on a GPU: seconds per epoch for 2, 82 and 1,000 graphs, and the 82-graph atlas to convergence.

Run where a CUDA device is present (one short, prepared script for a lent GPU machine)::

    python benchmarks/gpu_training_check.py                      # about 5-8 minutes on one H100
    python benchmarks/gpu_training_check.py --graphs 2 82 --no-converge

It prints the device, then for each number of simulated 1,000-gene graphs (those of ``bench_training.py``) the
seconds per epoch (median of epochs 2 and later) and the peak GPU memory with the package's defaults
(``accelerator='gpu'``; ``decoder_precision='auto'`` is bfloat16 on GPUs that support it), and finally trains the
82 graphs for the default number of epochs, reporting the wall time and the separation of the gene space (same-gene
minus random-pair cosine, as ``bench_atlas.py converge``) every 10 epochs. Paste the table into
``benchmarks/README.md`` with the device name. Without a CUDA device it says so and exits 0.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--graphs", type=int, nargs="+", default=[2, 82, 1000])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--no-converge", action="store_true", help="skip the 82-graph run to convergence")
    args = p.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("gpu_training_check: torch is not installed; nothing to measure.")
        return 0
    if not torch.cuda.is_available():
        print("gpu_training_check: no CUDA device here; run it on a machine with one.")
        return 0
    warnings.simplefilter("ignore")
    import lightning.pytorch as pl
    import numpy as np
    from bench_atlas import _simulated_graphs, separation

    from musegnn_sc.model import MuSeGNN

    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    init = {"n_latent": 32, "share_by": "omics", "heads_dataset": 4, "heads_shared": 2, "decoder": "mlp",
            "attention": "auto", "seed": 0}  # fmt: skip

    def model_of(n: int) -> MuSeGNN:
        graphs = _simulated_graphs(n)
        model = MuSeGNN.__new__(MuSeGNN)
        setup = {"graph_key": "coexpression", "mods": [g.name for g in graphs], "features": "graph"}
        model._build(graphs, setup, init, offload=False)
        return model

    class Clock(pl.Callback):
        def __init__(self, every: int = 0):
            self.times, self.evals, self.every = [], [], every

        def on_train_epoch_start(self, trainer, plan):
            torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, plan):
            torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.t0)
            epoch = plan.global_epoch + 1
            if self.every and (epoch % self.every == 0 or epoch == trainer.max_epochs):
                plan.module.eval()
                with torch.no_grad():
                    emb = [plan.module.encode(i, plan._graph(i)).float().cpu().numpy() for i in range(len(plan.graphs))]
                plan.module.train()
                same, rand = separation(emb, [g.genes for g in self.graphs])
                self.evals.append((epoch, same - rand, float(np.sum(self.times))))

    print("\n| graphs | s/epoch | peak GPU memory GB | decoder precision |\n|---|---|---|---|", flush=True)
    for n in args.graphs:
        model = model_of(n)
        clock = Clock()
        torch.cuda.reset_peak_memory_stats()
        model.train(max_epochs=args.epochs, accelerator="gpu", devices=1, progress_bar=False, callbacks=[clock])
        peak = torch.cuda.max_memory_allocated() / 1e9
        s = float(np.median(clock.times[1:])) if len(clock.times) > 1 else clock.times[0]
        print(f"| {n} | {s:.3f} | {peak:.1f} | {model.train_params_['decoder_precision']} |", flush=True)
        del model
        torch.cuda.empty_cache()
    if not args.no_converge:
        epochs = inspect.signature(MuSeGNN.train).parameters["max_epochs"].default
        model = model_of(82)
        clock = Clock(every=10)
        clock.graphs = model.graphs
        t0 = time.perf_counter()
        model.train(max_epochs=epochs, accelerator="gpu", devices=1, progress_bar=False, callbacks=[clock])
        wall = time.perf_counter() - t0
        print(f"\n82 graphs, {epochs} epochs (the default): {wall:.0f} s wall, {sum(clock.times):.0f} s in epochs")
        print("| epoch | separation | seconds of training |\n|---|---|---|")
        for epoch, sep, secs in clock.evals:
            print(f"| {epoch} | {sep:.3f} | {secs:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
