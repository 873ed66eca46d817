"""Reproduce the MuSe-GNN benchmark (paper section 4.1, Table 1) on local data.

    python benchmarks/run_benchmark.py --out benchmarks/results --seeds 0 1 2

The same as ``musegnn-sc benchmark ...`` (see ``--help`` for the options). Writes scores.csv (one row per method and
seed), summary.csv, summary.md (a Markdown table like the paper's Table 1) and summary.png, and prints the table.
"""

from __future__ import annotations

import argparse
import logging
import sys

import matplotlib

matplotlib.use("Agg")

from musegnn_sc.benchmark._cli import add_benchmark_parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    verbose = "-v" in argv or "--verbose" in argv
    argv = [a for a in argv if a not in ("-v", "--verbose")]
    parser = argparse.ArgumentParser(prog="run_benchmark.py")
    add_benchmark_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["benchmark", *argv])
    if verbose:
        logging.getLogger("musegnn_sc").setLevel(logging.INFO)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
