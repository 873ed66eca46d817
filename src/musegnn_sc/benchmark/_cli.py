"""The ``musegnn-sc benchmark`` subcommand (registered by :mod:`musegnn_sc.cli`)."""

from __future__ import annotations

import argparse
import ast


def add_benchmark_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``benchmark`` on the ``musegnn-sc`` subparsers and return its parser."""
    from ._runner import METHODS

    p = subparsers.add_parser(
        "benchmark",
        help="run MuSe-GNN and the baselines x seeds on a data collection and score them (paper Table 1)",
        description=(
            "Train every method with every seed on the same co-expression graphs, score the embeddings with the six "
            "metrics (AUC, ASW, GC, iLISI, CGR, NO), and write scores.csv, summary.csv, summary.md and summary.png."
        ),
    )
    p.add_argument("--collection", default="shared", help="'shared' (../shared/data) or the path of an .h5mu file")
    p.add_argument("--data-dir", default=None, help="folder of the shared collection (default: found automatically)")
    p.add_argument("--methods", nargs="+", default=None, choices=list(METHODS), help="default: all")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds of every method (default: 0 1 2)")
    p.add_argument("--out", default="benchmark_results", help="output folder")
    p.add_argument("--n-top-genes", type=int, default=1000, help="genes per co-expression graph (default: 1000)")
    p.add_argument("--max-cells", type=int, default=None, help="subsample larger datasets (faster graphs)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of every neural baseline (default: per method)")
    p.add_argument("--musegnn-epochs", type=int, default=None, help="max_epochs of train_musegnn")
    p.add_argument(
        "--common-min-datasets",
        type=int,
        default=None,
        help="common genes = genes in at least this many datasets (default: in all, as the paper)",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=METHOD:KEY=VALUE,...",
        help="an extra row: METHOD run with other options, e.g. musegnn_mean=musegnn:sim_reduction=mean (repeatable)",
    )
    p.add_argument("--n-jobs", type=int, default=1, help="datasets processed in parallel by the graph builder")
    p.add_argument("--save-embeddings", action="store_true", help="write every gene-level AnnData to OUT/embeddings/")
    p.add_argument("--no-cache", action="store_true", help="rebuild the graphs even if OUT/graphs.h5mu exists")
    p.set_defaults(func=run_benchmark_command)
    return p


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_variant(text: str) -> tuple[str, tuple[str, dict]]:
    """``'NAME=METHOD:KEY=VALUE,KEY=VALUE'`` -> ``(NAME, (METHOD, {KEY: VALUE, ...}))`` (values as Python literals)."""
    name, sep, rest = text.partition("=")
    method, _, opts = rest.partition(":")
    pairs = [kv.partition("=") for kv in opts.split(",") if kv]
    if not sep or not name.isidentifier() or not method or any(not eq or not k for k, eq, _ in pairs):
        msg = f"--variant {text!r}: expected NAME=METHOD:KEY=VALUE,... e.g. musegnn_mean=musegnn:sim_reduction=mean"
        raise argparse.ArgumentTypeError(msg)
    return name, (method, {k: _value(v) for k, _, v in pairs})


def run_benchmark_command(args) -> int:
    """Run the benchmark from parsed arguments and print the table."""
    from ._runner import run_benchmark

    options: dict = {}
    if args.epochs is not None:
        options.update({m: {"epochs": args.epochs} for m in ("gae", "vgae", "mae", "wsmae")})
    if args.musegnn_epochs is not None:
        options["musegnn"] = {"max_epochs": args.musegnn_epochs}
    result = run_benchmark(
        args.collection,
        variants=dict(parse_variant(v) for v in args.variant),
        methods=args.methods,
        seeds=args.seeds,
        data_dir=args.data_dir,
        out_dir=args.out,
        n_top_genes=args.n_top_genes,
        max_cells=args.max_cells,
        method_options=options,
        evaluate_options={"common_min_datasets": args.common_min_datasets},
        graph_cache=not args.no_cache,
        save_embeddings=args.save_embeddings,
        n_jobs=args.n_jobs,
    )
    print()
    print(result.to_markdown())
    print()
    for kind, path in result.files.items():
        print(f"wrote {kind}: {path}")
    return 0
