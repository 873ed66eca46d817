"""Does the reconstruction loss keep falling as datasets are added? BCE per epoch for 2 to 32 simulated graphs.

With the paper's summed ``L_Sim`` the reconstruction loss rose during the first epochs once many graphs trained
together (32 graphs: 0.73 -> 1.00 over 3 epochs); this prints, for the default and for the paper's objective, the
mean BCE of the first and last epochs on the simulated graphs of ``bench_training.py`` (1,000 genes, density 0.3).

    python benchmarks/bce_vs_datasets.py --graphs 2 8 32 --epochs 8
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS = {
    "default": {},
    "paper": {
        "sim_reduction": "sum",
        "lambda_contrastive": 0.01,
        "contrastive_anchors": "different",
        "lr_encoder": 1e-4,
        "reconstruction_fraction": 1.0,
        "decoder_precision": "float32",
    },  # fmt: skip
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graphs", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--genes", type=int, default=1000)
    args = parser.parse_args(argv)

    from bench_training import _simulated_mudata

    from musegnn_sc.model import MuSeGNN

    rows = []
    for n in args.graphs:
        mdata = _simulated_mudata(n, n_genes=args.genes)
        for name, options in VARIANTS.items():
            model = MuSeGNN(mdata, seed=0)
            t0 = time.perf_counter()
            model.train(max_epochs=args.epochs, progress_bar=False, accelerator="cpu", **options)
            bce = model.history["bce"].to_numpy()
            rows.append((n, name, bce[0], bce[len(bce) // 2], bce[-1], time.perf_counter() - t0))
            print(f"{n} graphs, {name}: BCE {bce.round(3).tolist()}", file=sys.stderr, flush=True)
    print(f"| graphs | objective | BCE epoch 1 | BCE epoch {args.epochs // 2 + 1} | BCE epoch {args.epochs} | s |")
    print("|---|---|---|---|---|---|")
    for n, name, first, mid, last, sec in rows:
        print(f"| {n} | {name} | {first:.3f} | {mid:.3f} | {last:.3f} | {sec:.0f} |")


if __name__ == "__main__":
    main()
