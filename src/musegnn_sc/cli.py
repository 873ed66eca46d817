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
    import mudata

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".h5mu.tmp", dir=path.parent)
    os.close(fd)
    try:
        with mudata.set_options(pull_on_update=False):
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
    import time

    import mudata

    import musegnn_sc as msg

    t0 = time.perf_counter()
    out = Path(args.out) if args.out else None
    mdata = msg.datasets.toy_mudata(seed=args.seed)
    print(f"Simulated MuData: {len(mdata.mod)} unpaired datasets ({', '.join(mdata.mod)})")
    # the mouse dataset shares anchors with the human ones once its genes carry human symbols; renaming genes changes
    # the shared var axis, so the MuData is rebuilt from its modalities
    orthologs = mdata.uns["toy_truth"]["orthologs"]
    mods = {
        name: msg.pp.map_orthologs(ad, orthologs, source="mouse", target="human", copy=True)
        if ad.uns.get("species") == "mouse"
        else ad
        for name, ad in mdata.mod.items()
    }
    with mudata.set_options(pull_on_update=False):
        mdata = mudata.MuData(mods, axis=1, uns=dict(mdata.uns))

    msg.pp.build_coexpression_graphs(mdata, n_top_genes=args.n_top_genes, n_jobs=args.n_jobs)
    print("\nCo-expression graphs (msg.pp.build_coexpression_graphs):")
    print(graph_summary(mdata).to_string())

    gdata = msg.tl.train_musegnn(mdata, max_epochs=args.epochs, seed=args.seed, progress_bar=False)
    history = gdata.uns["musegnn"]["history"]
    print(f"\nMuSe-GNN trained for {args.epochs} epochs (msg.tl.train_musegnn): {gdata.n_obs} dataset-gene embeddings")
    print(pd_table(history).to_string())

    msg.tl.gene_modules(gdata, resolution=args.resolution, random_state=args.seed)
    summary = gdata.uns["leiden"]["summary"]
    print(f"\nGene modules (msg.tl.gene_modules): {gdata.obs['leiden'].nunique()} Leiden modules")
    cols = ["n_genes", "n_unique_genes", "n_dataset", "top_dataset", "n_omics", "top_omics", "shared_omics"]
    print(summary[[c for c in cols if c in summary.columns]].head(12).to_string())
    truth = mdata.uns["toy_truth"]["genes"]
    planted = truth.assign(human_gene=truth["human_gene"].astype(str)).drop_duplicates("human_gene")
    planted = planted.set_index("human_gene")["module"].astype(str)
    modules = gdata.obs.assign(planted=gdata.obs["gene"].map(planted).fillna("none"))
    modules = modules[modules["planted"] != "none"]
    from sklearn.metrics import adjusted_rand_score

    ari = adjusted_rand_score(modules["planted"], modules["leiden"])
    print(f"Planted modules recovered: adjusted Rand index {ari:.2f} over {len(modules)} module genes")

    if out is not None:
        import matplotlib

        matplotlib.use("Agg")
        out.mkdir(parents=True, exist_ok=True)
        msg.pl.embedding(gdata, color=["leiden", "omics"], show=False, save=out / "umap.png")
        gdata.write_h5ad(out / "gene_embeddings.h5ad")
        _write_h5mu_atomic(mdata, out / "toy_graphs.h5mu")
        print(f"\nWrote {out / 'umap.png'}, {out / 'gene_embeddings.h5ad'} and {out / 'toy_graphs.h5mu'}")
    print(f"Done in {time.perf_counter() - t0:.0f} s")
    return 0


def pd_table(history):
    """First and last epochs of the loss history."""
    import pandas as pd

    df = pd.DataFrame(history) if not isinstance(history, pd.DataFrame) else history
    return df.iloc[[0, len(df) // 2, len(df) - 1]] if len(df) > 2 else df


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
    demo.add_argument("--n-top-genes", type=int, default=300)
    demo.add_argument("--epochs", type=int, default=40)
    demo.add_argument("--resolution", type=float, default=1.0)
    demo.add_argument("--n-jobs", type=int, default=2)
    demo.set_defaults(func=_demo)

    graphs = sub.add_parser("graphs", help="build co-expression graphs for every modality of an .h5mu file")
    graphs.add_argument("input")
    graphs.add_argument("output")
    graphs.add_argument("--layer", default=None, help="layer with raw counts (default: X)")
    graphs.add_argument("--n-top-genes", type=int, default=1000)
    graphs.add_argument("--pval-cutoff", type=float, default=0.005)
    graphs.add_argument("--n-jobs", type=int, default=1)
    graphs.set_defaults(func=_graphs)

    from musegnn_sc.benchmark._cli import add_benchmark_parser

    add_benchmark_parser(sub)

    args = parser.parse_args(argv)
    if args.verbose:
        logging.getLogger("musegnn_sc").setLevel(logging.INFO)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
