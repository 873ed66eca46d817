"""Biological checks and a second scoring of the embeddings saved by ``run_benchmark.py --save-embeddings``.

Usage::

    python benchmarks/run_benchmark.py --out results --seeds 0 1 2 --save-embeddings
    python benchmarks/biological_checks.py results

For every saved embedding (``results/embeddings/{method}_seed{seed}.h5ad``) it computes, with the graphs of
``results/graphs.h5mu``:

- the six metrics again with common genes defined as genes in at least 2 datasets (``--common-min-datasets``; the
  paper's definition, genes in every dataset, leaves 11 genes on the ``../shared/data`` collection);
- pathway coherence (``msg.tl.gene_set_coherence`` on the MSigDB hallmark sets): the median AUROC over the sets
  with at least 5 embedded genes, and how many are coherent at FDR < 0.05;
- gene-function prediction (``msg.tl.predict_gene_function``, 10-NN, 5-fold): transcription factors (Lambert et al.
  2018) and stably expressed genes (scSEG, Lin et al. 2019) against every other gene, AUROC of the per-gene embedding
  (mean over datasets) and, once, of each dataset's raw expression profiles.

It writes ``biology.csv`` and ``biology.md`` next to the benchmark's files and prints the tables.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
HALLMARK = SHARED / "genesets" / "msigdb_h.all.v7.5.1.symbols.gmt"
LABELS = {
    "TF": SHARED / "gene_labels" / "human_TFs_lambert2018_v1.01.txt",
    "stable": SHARED / "gene_labels" / "stably_expressed_housekeeping" / "human_human_scSEG.txt",
}


def _genes(path: Path) -> list[str]:
    return [g.strip() for g in path.read_text().splitlines() if g.strip()]


def _check_one(gdata, mdata, seed: int, common_min: int) -> dict[str, float]:
    import numpy as np

    import musegnn_sc as msg

    row = msg.tl.evaluate(gdata, mdata, seed=seed, common_min_datasets=common_min).to_dict()
    coh = msg.tl.gene_set_coherence(gdata, HALLMARK, seed=seed)
    row["hallmark_auroc"] = float(np.median(coh["auroc"]))
    row["hallmark_fdr05"] = int((coh["fdr"] < 0.05).sum())
    row["hallmark_sets"] = len(coh)
    for name, path in LABELS.items():
        res = msg.tl.predict_gene_function(gdata, _genes(path), seed=seed)
        row[f"{name}_auroc"] = float(res.loc[res["features"] == "embedding_gene_mean", "auroc"].iloc[0])
    return row


def _raw_baseline(gdata, mdata) -> dict[str, float]:
    import musegnn_sc as msg

    row = {}
    for name, path in LABELS.items():
        res = msg.tl.predict_gene_function(gdata, _genes(path), mdata=mdata, seed=0)
        row[f"{name}_auroc"] = float(res.loc[res["features"] == "raw_expression", "auroc"].mean())
    return row


def _fmt(mean, std, digits: int = 3) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std == std else f"{mean:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder of run_benchmark.py --save-embeddings")
    parser.add_argument("--common-min-datasets", type=int, default=2)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    import anndata as ad
    import mudata as md
    import pandas as pd

    import musegnn_sc as msg

    files = sorted((args.out / "embeddings").glob("*_seed*.h5ad"))
    if not files:
        print(f"No embeddings in {args.out / 'embeddings'}: run run_benchmark.py with --save-embeddings.")
        return 1
    mdata = md.read_h5mu(args.out / "graphs.h5mu")
    rows = []
    raw = None
    for f in files:
        method, seed = re.fullmatch(r"(.+)_seed(\d+)", f.stem).groups()
        gdata = ad.read_h5ad(f)
        rows.append(
            {"method": method, "seed": int(seed), **_check_one(gdata, mdata, int(seed), args.common_min_datasets)}
        )
        if raw is None:
            raw = _raw_baseline(gdata, mdata)
        print(
            f"{method} seed {seed}: "
            + "  ".join(f"{k} {v:.3f}" for k, v in rows[-1].items() if k not in ("method", "seed"))
        )
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "biology.csv", index=False)
    metrics = [m for m in msg.tl._evaluate.METRICS if m in table]
    scored = msg.tl.score_methods(table[["method", "seed", *metrics]], metrics=metrics)
    bio = ["hallmark_auroc", "hallmark_fdr05", "TF_auroc", "stable_auroc"]
    agg = table.groupby("method")[bio].agg(["mean", "std"])
    lines = [
        f"Six metrics with common genes = genes in at least {args.common_min_datasets} datasets:",
        "",
        "| method | " + " | ".join(metrics) + " | Avg Score | Avg Rank |",
        "|---" * (len(metrics) + 3) + "|",
    ]
    for method, r in scored.iterrows():
        cells = [_fmt(r[m], r.get(f"{m}_std", float("nan"))) for m in [*metrics, "avg_score", "avg_rank"]]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    n_sets = int(table["hallmark_sets"].iloc[0])
    lines += [
        "",
        f"Biological checks ({n_sets} hallmark sets with at least 5 embedded genes; gene-function AUROC of 10-NN):",
        "",
        "| method | hallmark coherence (median AUROC) | hallmark sets at FDR < 0.05 | TF vs other genes | stable vs other "
        "genes |",
        "|---|---|---|---|---|",
    ]
    for method in scored.index:
        cells = [_fmt(agg.loc[method, (c, "mean")], agg.loc[method, (c, "std")], 1 if "fdr" in c else 3) for c in bio]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines.append(f"| raw expression (per dataset) | - | - | {raw['TF_auroc']:.3f} | {raw['stable_auroc']:.3f} |")
    text = "\n".join(lines)
    (args.out / "biology.md").write_text(text + "\n")
    print()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
