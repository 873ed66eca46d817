"""The ``musegnn-sc`` command line.

``musegnn-sc demo`` runs the main job on the embedded simulated data; ``musegnn-sc graphs IN.h5mu OUT.h5mu``
builds the co-expression graphs of a user's MuData.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path


def _write_h5mu_atomic(mdata, path: Path) -> None:
    """Write next to the target, then rename: an interrupted write never leaves a truncated file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".h5mu.tmp", dir=path.parent)
    os.close(fd)
    try:
        mdata.write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def graph_summary(mdata, key: str = "coexpression"):
    """One row per dataset: what the graph builder stored."""
    import pandas as pd

    rows = []
    for name, ad in mdata.mod.items():
        if key not in ad.uns:
            continue
        info = ad.uns[key]
        rows.append(
            {
                "dataset": name,
                "omics": info["omics"],
                "tissue": info["tissue"],
                "species": info["species"],
                "cells": int(info["n_cells"]),
                "genes": int(info["n_genes"]),
                "edges": int(info["n_edges"]),
                "density": round(float(info["density"]), 3),
                "features": ad.varm[info["features_key"]].shape[1],
                "selection": info["params"]["selection"],
            }
        )
    return pd.DataFrame(rows).set_index("dataset")


def _demo(args) -> int:
    import musegnn_sc as msg

    mdata = msg.datasets.toy_mudata(seed=args.seed)
    print(f"Simulated MuData: {len(mdata.mod)} unpaired datasets ({', '.join(mdata.mod)})")
    msg.pp.build_coexpression_graphs(mdata, n_top_genes=args.n_top_genes, n_jobs=args.n_jobs)
    print("\nCo-expression graphs (msg.pp.build_coexpression_graphs):")
    print(graph_summary(mdata).to_string())
    first = next(iter(mdata.mod.values()))
    print("\nStored in each modality, e.g.", repr(next(iter(mdata.mod))) + ":")
    print("  varp:", sorted(first.varp.keys()))
    print("  varm:", sorted(first.varm.keys()))
    print("  var: ", [c for c in first.var.columns if c.startswith("coexpression")])
    print("  uns: ", ["coexpression"], "with params", sorted(first.uns["coexpression"]["params"]))
    if args.out:
        out = Path(args.out) / "toy_graphs.h5mu"
        _write_h5mu_atomic(mdata, out)
        print(f"\nWrote {out}")
    return 0


def _graphs(args) -> int:
    import mudata

    import musegnn_sc as msg

    mdata = mudata.read_h5mu(args.input)
    msg.pp.build_coexpression_graphs(
        mdata, n_top_genes=args.n_top_genes, layer=args.layer, pval_cutoff=args.pval_cutoff, n_jobs=args.n_jobs
    )
    print(graph_summary(mdata).to_string())
    _write_h5mu_atomic(mdata, Path(args.output))
    print(f"Wrote {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``musegnn-sc`` console script."""
    parser = argparse.ArgumentParser(prog="musegnn-sc", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log what each step stores and how long it takes")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the main job on the embedded simulated datasets")
    demo.add_argument("--out", default=None, help="folder to write the results to")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--n-top-genes", type=int, default=1000)
    demo.add_argument("--n-jobs", type=int, default=1)
    demo.set_defaults(func=_demo)

    graphs = sub.add_parser("graphs", help="build co-expression graphs for every modality of an .h5mu file")
    graphs.add_argument("input")
    graphs.add_argument("output")
    graphs.add_argument("--layer", default=None, help="layer with raw counts (default: X)")
    graphs.add_argument("--n-top-genes", type=int, default=1000)
    graphs.add_argument("--pval-cutoff", type=float, default=0.005)
    graphs.add_argument("--n-jobs", type=int, default=1)
    graphs.set_defaults(func=_graphs)

    args = parser.parse_args(argv)
    if args.verbose:
        logging.getLogger("musegnn_sc").setLevel(logging.INFO)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
