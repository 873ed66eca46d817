"""The ``musegnn-sc benchmark`` subcommand (registered by :mod:`musegnn_sc.cli`)."""

from __future__ import annotations

import argparse
import ast
import shutil
from pathlib import Path

from musegnn_sc.cli import CLIError, _input_file, _output_path, _positive_int, _type

#: The ``--collection`` keyword of the public datasets (a file of that name is reached as ``./shared``).
SHARED = "shared"
_seed = _type(int, "an integer >= 0", lambda v: v >= 0)
_n_jobs = _type(int, "a positive integer or -1 (every core)", lambda v: v >= 1 or v == -1)

EPILOG = """\
Output folder (--out):
  An existing OUT is refused, as every musegnn-sc verb refuses an existing output. OUT is filled as the benchmark
  runs (scores.csv after every method and seed, graphs.h5mu once the graphs are built), so that an interrupted
  benchmark can be continued:
    --resume     continue in OUT (made if missing): reuse its graphs.h5mu (unless --no-cache) and the rows of
                 its scores.csv for the same method and seed; only the missing runs are made. Use it also to add
                 methods or seeds to a finished benchmark (same collection and options).
    --overwrite  start afresh: the benchmark's earlier files in OUT (graphs.h5mu, scores.csv, summary.csv,
                 summary.md, summary.png, settings.json, embeddings/) are deleted first; other files are kept.
  The collection (and --data-dir) may not lie inside OUT.

Examples:
  musegnn-sc benchmark --out results --seeds 0 1 2 --max-cells 2000
  musegnn-sc benchmark --out results --seeds 0 1 2 3 --resume          # one more seed, the same graphs
  musegnn-sc benchmark --collection graphs.h5mu --methods pca gae --out results_pca"""


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
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # `musegnn-sc` may add its common options (--overwrite among them) after these: the later definition wins
        conflict_handler="resolve",
    )
    p.add_argument(
        "--collection",
        default=SHARED,
        help="'shared' (the public datasets of ../shared/data, see --data-dir) or the path of an .h5mu file, one "
        "modality per dataset (raw counts, or graphs already built) (default: %(default)s)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder of the shared collection (default: $MUSEGNN_SC_DATA, then ../shared/data)",
    )
    p.add_argument("--methods", nargs="+", default=None, choices=list(METHODS), help="default: all")
    p.add_argument("--seeds", nargs="+", type=_seed, default=[0, 1, 2], help="seeds of every method (default: 0 1 2)")
    p.add_argument(
        "--out",
        default="benchmark_results",
        help="output folder, refused if it exists unless --resume or --overwrite (default: %(default)s)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue in OUT (an interrupted or finished benchmark): reuse its graphs.h5mu and the scores in its "
        "scores.csv",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an existing OUT: delete the benchmark's earlier files there first",
    )
    p.add_argument(
        "--n-top-genes", type=_positive_int, default=1000, help="genes per co-expression graph (default: %(default)s)"
    )
    p.add_argument("--max-cells", type=_positive_int, default=None, help="subsample larger datasets (faster graphs)")
    p.add_argument(
        "--epochs", type=_positive_int, default=None, help="epochs of every neural baseline (default: per method)"
    )
    p.add_argument("--musegnn-epochs", type=_positive_int, default=None, help="max_epochs of train_musegnn")
    p.add_argument(
        "--common-min-datasets",
        type=_positive_int,
        default=None,
        help="common genes = genes in at least this many datasets (default: in all, as the paper)",
    )
    p.add_argument(
        "--variant",
        action="append",
        type=parse_variant,
        default=[],
        metavar="NAME=METHOD:KEY=VALUE,...",
        help="an extra row: METHOD run with other options, e.g. musegnn_mean=musegnn:sim_reduction=mean (repeatable)",
    )
    p.add_argument(
        "--n-jobs",
        type=_n_jobs,
        default=1,
        help="datasets processed in parallel by the graph builder (-1: every core; default: %(default)s)",
    )
    p.add_argument("--save-embeddings", action="store_true", help="write every gene-level AnnData to OUT/embeddings/")
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="neither read nor write OUT/graphs.h5mu: build the graphs in memory (with --resume too)",
    )
    p.set_defaults(func=run_benchmark_command)
    return p


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_variant(text: str) -> tuple[str, tuple[str, dict]]:
    """``'NAME=METHOD:KEY=VALUE,KEY=VALUE'`` -> ``(NAME, (METHOD, {KEY: VALUE, ...}))`` (values as Python literals)."""
    from ._runner import METHODS

    name, sep, rest = text.partition("=")
    method, _, opts = rest.partition(":")
    pairs = [kv.partition("=") for kv in opts.split(",") if kv]
    if not sep or not name.isidentifier() or not method or any(not eq or not k for k, eq, _ in pairs):
        msg = f"--variant {text!r}: expected NAME=METHOD:KEY=VALUE,... e.g. musegnn_mean=musegnn:sim_reduction=mean"
        raise argparse.ArgumentTypeError(msg)
    if method not in METHODS or name in METHODS:
        msg = f"--variant {text!r}: a variant needs a new NAME and one of {', '.join(METHODS)} as its METHOD"
        raise argparse.ArgumentTypeError(msg)
    return name, (method, {k: _value(v) for k, _, v in pairs})


class BenchmarkInputError(CLIError, ValueError):
    """A bad input or output of ``benchmark``: one line on stderr and exit status 2.

    Also a :class:`ValueError`, so that it is reported as one line when the command line runs as
    ``python -m musegnn_sc.cli`` too (there the module is ``__main__``, whose ``CLIError`` is another class).
    """


def check_benchmark_paths(args) -> tuple[str | Path, Path | None, Path]:
    """``(collection, data_dir, out)``, checked before any work; :class:`~musegnn_sc.cli.CLIError` otherwise.

    ``--collection`` is the keyword ``shared`` (its folder is looked up now, so that a missing one fails before OUT
    is made) or a readable ``.h5mu`` file. ``--out`` must not exist unless ``--resume`` (continue in it) or
    ``--overwrite`` (start afresh), must be a folder, and may not hold the inputs.
    """
    from ._runner import find_shared_data

    resume, overwrite = _flag(args, "resume"), _flag(args, "overwrite")
    if resume and overwrite:
        msg = "--resume continues the benchmark in OUT and --overwrite starts it afresh: pass one of them."
        raise BenchmarkInputError(msg)
    data_dir = None
    if args.collection == SHARED:
        if args.data_dir is not None:
            given = Path(args.data_dir)
            if not given.is_dir():
                what = "is a file" if given.exists() else "does not exist"
                msg = f"--data-dir {str(given)!r} {what}: pass the folder holding scrna/ and spatial/."
                raise BenchmarkInputError(msg)
        data_dir = find_shared_data(args.data_dir)  # FileNotFoundError: one line naming where it looked
        collection: str | Path = SHARED
        inputs = [data_dir]
    else:
        collection, _ = _input_file(args.collection, accept=("h5mu",), what="collection")
        inputs = [collection]
    out = Path(args.out)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            msg = f"output folder {str(out)!r} is a file: pass a folder (or remove the file)."
            raise BenchmarkInputError(msg)
        if not (resume or overwrite):
            msg = (
                f"output folder {str(out)!r} already exists: pass --resume to continue the benchmark in it (reusing "
                "its graphs and scores), --overwrite to start afresh, or choose another path."
            )
            raise BenchmarkInputError(msg)
    out = _output_path(out, inputs=inputs, overwrite=True, directory=True, what="output folder")
    return collection, data_dir, out


def _flag(args, name: str) -> bool:
    # parsers built without musegnn-sc's common options (benchmarks/run_benchmark.py) may lack a flag
    return bool(getattr(args, name, False))


def _shows_results(args) -> bool:
    """Progress lines and the table on stdout, unless -q (as every verb)."""
    from musegnn_sc.cli import _verbosity

    try:
        return _verbosity(args) >= 2
    except AttributeError:  # a parser without -v/-q (benchmarks/run_benchmark.py)
        return True


def _clear_outputs(out: Path) -> None:
    """Delete what an earlier benchmark wrote in ``out``, and nothing else."""
    from ._runner import OUTPUT_DIRS, OUTPUT_FILES

    for name in OUTPUT_FILES:
        (out / name).unlink(missing_ok=True)
    for name in OUTPUT_DIRS:
        if (out / name).is_dir():
            shutil.rmtree(out / name)


def run_benchmark_command(args) -> int:
    """Run the benchmark from parsed arguments and print the table."""
    from ._runner import run_benchmark

    try:
        collection, data_dir, out = check_benchmark_paths(args)
    except CLIError as err:
        if isinstance(err, BenchmarkInputError):
            raise
        raise BenchmarkInputError(*err.args) from None
    options: dict = {}
    if args.epochs is not None:
        options.update({m: {"epochs": args.epochs} for m in ("gae", "vgae", "mae", "wsmae")})
    if args.musegnn_epochs is not None:
        options["musegnn"] = {"max_epochs": args.musegnn_epochs}
    show = _shows_results(args)
    if _flag(args, "overwrite") and out.is_dir():
        _clear_outputs(out)
    result = run_benchmark(
        str(collection),
        variants=dict(args.variant),
        methods=args.methods,
        seeds=args.seeds,
        data_dir=data_dir,
        out_dir=out,
        n_top_genes=args.n_top_genes,
        max_cells=args.max_cells,
        method_options=options,
        evaluate_options={"common_min_datasets": args.common_min_datasets},
        graph_cache=not args.no_cache,
        resume=_flag(args, "resume"),
        save_embeddings=args.save_embeddings,
        n_jobs=args.n_jobs,
        progress=print if show else None,
    )
    if show:
        print()
        print(result.to_markdown())
        print()
        for kind, path in result.files.items():
            print(f"wrote {kind}: {path}")
    return 0
