"""The ``musegnn-sc`` command line: one verb per step of the pipeline, from ``.h5ad`` files to gene modules.

``graphs``, ``train``, ``map``, ``modules``, ``demo`` and ``benchmark``; see :data:`DESCRIPTION` (the text of
``musegnn-sc --help``) and ``workflow/Snakefile``, which runs the same verbs with Snakemake.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROG = "musegnn-sc"
#: Exit status of a bad command line or a bad input (argparse's).
EXIT_USAGE = 2
#: Keys a dataset entry of a collection file may have.
COLLECTION_KEYS = ("name", "path", "omics", "tissue", "species", "layer", "gene_symbols")
#: Files written by ``train`` into the model directory, beside the model itself (``model.pt``).
EMBEDDINGS_FILE = "gene_embeddings.h5ad"
HISTORY_FILE = "history.tsv"
_HDF5_KINDS = {"h5ad": "AnnData", "h5mu": "MuData"}
_COLLECTION_SUFFIXES = (".toml", ".yaml", ".yml")

#: Text of ``musegnn-sc --help`` (plain text: the terminal shows no reStructuredText).
DESCRIPTION = f"""\
MuSe-GNN gene embeddings from the command line: one verb per step of the pipeline.

Typical use, one job per dataset, then one joint training:

  {PROG} graphs heart.h5ad -o graphs/heart.h5ad --tissue heart --species human
  {PROG} graphs lung.h5ad -o graphs/lung.h5ad --tissue lung --species human
  {PROG} train graphs/heart.h5ad graphs/lung.h5ad -o model --embeddings genes.h5ad
  {PROG} modules genes.h5ad --gmt h.all.v2023.1.Hs.symbols.gmt -o modules

and later, a new study mapped into that model without retraining it:

  {PROG} graphs kidney.h5ad -o graphs/kidney.h5ad --tissue kidney --species human
  {PROG} map graphs/kidney.h5ad --reference model -o model_kidney --embeddings genes_kidney.h5ad

Every verb checks its inputs and outputs before computing anything, refuses to replace an existing output unless
given --overwrite (and never replaces one of its inputs), writes through a temporary file in the output's directory
renamed into place (an interrupted job leaves no truncated output), and reports a bad input as one line on stderr,
"{PROG}: error: ...", with exit status 2 (-v shows the traceback of an error raised by the library). Messages
follow scanpy's verbosity: progress lines by default, -v for more, -q for warnings only, -qq for errors only."""


class CLIError(Exception):
    """A bad input or output: reported as one line on stderr, exit status 2."""


# ---------------------------------------------------------------------------------------------------- verbosity
def _verbosity(args) -> int:
    """Verbosity (scanpy's levels) asked for on the command line: 2 (info, progress lines) by default, -v 3, -q 1, -qq 0."""
    return max(0, min(3, 2 + args.verbose + args.verbose_top - args.quiet - args.quiet_top))


@contextlib.contextmanager
def _log_level(verbosity: int) -> Iterator[None]:
    """Set the package logger (and scanpy's verbosity, if scanpy is imported meanwhile) for one command."""
    from musegnn_sc._logging import SCANPY_LEVELS, logger

    previous = logger.level
    logger.setLevel(SCANPY_LEVELS[verbosity])
    sc_before = sys.modules.get("scanpy")
    sc_verbosity = sc_before.settings.verbosity if sc_before is not None else None
    try:
        yield
    finally:
        logger.setLevel(previous)
        sc = sys.modules.get("scanpy")
        if sc is not None:
            sc.settings.verbosity = sc_verbosity if sc_verbosity is not None else 1


def _scanpy(verbosity: int):
    """Import scanpy with its verbosity set to the command's (restored when the command ends)."""
    import scanpy as sc

    sc.settings.verbosity = verbosity
    return sc


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings as one line, ``musegnn-sc: warning: ...``, without the source line."""
    return f"{PROG}: warning: {' '.join(str(message).split())}\n"


# ---------------------------------------------------------------------------------------------------- paths
def _hdf5_kind(path: Path) -> str:
    """``'h5ad'`` or ``'h5mu'``, from the file's content; :class:`CLIError` for anything else."""
    import h5py

    try:
        is_hdf5 = h5py.is_hdf5(path)
    except OSError as err:
        msg = f"cannot read {str(path)!r} ({err.strerror or err}): check that the file is readable."
        raise CLIError(msg) from None
    if not is_hdf5:
        with path.open("rb") as fh:
            head = fh.read(2048)
        looks_text = b"\0" not in head and _decodes(head)
        what = "a text file" if looks_text else "not an HDF5 file"
        hint = (
            " (a table? read it with anndata.read_csv or scanpy.read_text and write it with .write_h5ad)"
            if looks_text
            else ""
        )
        msg = f"{str(path)!r} is {what}{hint}: pass an .h5ad (AnnData) or .h5mu (MuData) file."
        raise CLIError(msg)
    try:
        with h5py.File(path, "r") as f:
            encoding = f.attrs.get("encoding-type", "")
            encoding = encoding.decode() if isinstance(encoding, bytes) else str(encoding)
            if "mod" in f or encoding.lower() == "mudata":
                return "h5mu"
            if encoding == "anndata" or ("obs" in f and "var" in f):
                return "h5ad"
    except OSError as err:
        msg = f"cannot open {str(path)!r} as HDF5 ({err}): the file may be truncated (an interrupted copy?)."
        raise CLIError(msg) from None
    msg = f"{str(path)!r} is an HDF5 file but neither an AnnData (.h5ad) nor a MuData (.h5mu)."
    raise CLIError(msg)


def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        return err.start > len(data) - 4  # a multi-byte character cut at the end of the sample
    return True


def _existing_file(path: str | os.PathLike, what: str) -> Path:
    """A file that exists and can be read, or :class:`CLIError` naming it and the fix."""
    p = Path(path)
    if not p.exists():
        msg = f"{what} {str(p)!r} does not exist: check the path (relative paths start at {os.getcwd()!r})."
        raise CLIError(msg)
    if p.is_dir():
        msg = f"{what} {str(p)!r} is a directory: pass a file."
        raise CLIError(msg)
    if not os.access(p, os.R_OK):
        msg = f"{what} {str(p)!r} cannot be read (permission denied): check its permissions."
        raise CLIError(msg)
    return p


def _input_file(path: str | os.PathLike, *, accept: Sequence[str] = ("h5ad", "h5mu"), what: str = "input") -> tuple:
    """Check an input ``.h5ad``/``.h5mu`` file: ``(path, kind)`` with the kind read from its content."""
    p = _existing_file(path, what)
    kind = _hdf5_kind(p)
    suffix = p.suffix.lower().lstrip(".")
    if suffix in _HDF5_KINDS and suffix != kind:
        msg = (
            f"{what} {str(p)!r} holds a {_HDF5_KINDS[kind]} but is named .{suffix}: rename it to "
            f"{p.with_suffix('.' + kind).name!r}."
        )
        raise CLIError(msg)
    if kind not in accept:
        wanted = " or ".join(f".{k} ({_HDF5_KINDS[k]})" for k in accept)
        msg = f"{what} {str(p)!r} is a {_HDF5_KINDS[kind]} (.{kind}); this command reads {wanted}."
        if kind == "h5mu" and "h5ad" in accept:
            msg += " Pass one of its modalities written with `mdata.mod[name].write_h5ad(...)`."
        raise CLIError(msg)
    return p, kind


def _same_path(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _inside(path: Path, directory: Path) -> bool:
    return path.resolve().is_relative_to(directory.resolve())


def _output_path(
    path: str | os.PathLike,
    *,
    inputs: Sequence[Path],
    overwrite: bool,
    suffix: str | None = None,
    directory: bool = False,
    what: str = "output",
) -> Path:
    """Check an output before any work: never an input, an existing one only with ``--overwrite``."""
    p = Path(path)
    if suffix is not None and p.suffix.lower() != suffix:
        msg = f"{what} {str(p)!r} must end with {suffix}: name it {p.with_suffix(suffix).name!r}."
        raise CLIError(msg)
    for src in inputs:
        if _same_path(p, src) or (directory and _inside(src, p)):
            where = "is" if _same_path(p, src) else "contains"
            msg = (
                f"{what} {str(p)!r} {where} the input {str(src)!r}: inputs are never written, even with "
                "--overwrite. Choose another output path."
            )
            raise CLIError(msg)
    if p.exists() or p.is_symlink():
        if not overwrite:
            msg = f"{what} {str(p)!r} already exists: pass --overwrite to replace it, or choose another path."
            raise CLIError(msg)
        if directory != p.is_dir():
            kind = "a directory" if p.is_dir() else "a file"
            msg = f"{what} {str(p)!r} exists and is {kind}; --overwrite replaces like with like. Remove it first."
            raise CLIError(msg)
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        msg = f"cannot write {what} {str(p)!r}: {str(parent)!r} is not writable."
        raise CLIError(msg)
    return p


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s directory; rename it to ``path`` when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's files are private; outputs get the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; it replaces ``path`` (if any) when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's directories are private
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _write_h5mu_atomic(mdata, path: Path) -> None:
    """Write next to the target, then rename: an interrupted write never leaves a truncated file behind."""
    import mudata

    with atomic_file(path) as tmp, mudata.set_options(pull_on_update=False):
        mdata.write(tmp)


def _write_h5ad_atomic(adata, path: Path) -> None:
    with atomic_file(path) as tmp:
        adata.write_h5ad(tmp)


def _unreadable(path, err: BaseException, *, as_kind: str | None = None) -> CLIError:
    """The one-line error for an input file that could not be read (truncated, not HDF5, not the expected kind)."""
    detail = " ".join(str(err).split())[:200]
    kind = f" as {as_kind}" if as_kind else ""
    return CLIError(f"cannot read {str(path)!r}{kind} ({type(err).__name__}: {detail}): is it complete?")


def _read(path: Path, kind: str, *, backed: bool = False):
    """Read a checked ``.h5ad``/``.h5mu`` file; a file that does not parse is a :class:`CLIError`.

    ``backed``: an ``.h5ad``'s ``X`` stays on disk (the caller closes ``adata.file``).
    """
    import anndata
    import mudata

    try:
        if kind == "h5mu":
            with mudata.set_options(pull_on_update=False):
                return mudata.read_h5mu(path)
        return anndata.read_h5ad(path, backed="r" if backed else None)
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise _unreadable(path, err, as_kind=_HDF5_KINDS[kind]) from None


# ---------------------------------------------------------------------------------------------------- collections
@dataclass
class DatasetEntry:
    """One dataset of a collection file: its file and descriptors (``None``: read from the file)."""

    name: str
    path: Path
    omics: str | None = None
    tissue: str | None = None
    species: str | None = None
    layer: str | None = None
    gene_symbols: str | None = None


def read_collection(path: str | os.PathLike) -> list[DatasetEntry]:
    """Read a TOML or YAML collection file: one entry per dataset with ``path`` and its descriptors.

    The file lists ``datasets``, each with ``path`` (relative to the collection file's directory) and optionally
    ``name`` (default: the file name without its suffix), ``omics`` (``rna``, ``atac`` or ``spatial``), ``tissue``,
    ``species``, ``layer`` (the layer with raw counts) and ``gene_symbols`` (the ``var`` column of gene symbols), the
    last two used when building the graph. In TOML::

        [[datasets]]
        path = "data/heart.h5ad"
        omics = "rna"
        tissue = "heart"
        species = "human"

    In YAML, ``datasets:`` followed by a list of mappings (or the list alone).

    Parameters
    ----------
    path
        Path of the ``.toml``, ``.yaml`` or ``.yml`` file.

    Returns
    -------
    The entries, in file order, with paths resolved against the collection file's directory.
    """
    p = _existing_file(path, "collection file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        msg = f"collection file {str(p)!r} is not a UTF-8 text file: write it in TOML or YAML."
        raise CLIError(msg) from None
    try:
        if p.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as err:  # noqa: BLE001 - tomllib and yaml raise their own error classes
        detail = " ".join(str(err).split())[:200]
        msg = f"collection file {str(p)!r} does not parse ({detail}): fix its syntax."
        raise CLIError(msg) from None
    entries = data.get("datasets") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        msg = f"collection file {str(p)!r} lists no dataset: give a `datasets` list of entries with a `path` each."
        raise CLIError(msg)
    out: list[DatasetEntry] = []
    for i, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or "path" not in entry:
            msg = f"collection file {str(p)!r}: dataset {i} has no `path` (each entry is a mapping with a `path`)."
            raise CLIError(msg)
        unknown = sorted(set(entry) - set(COLLECTION_KEYS))
        if unknown:
            msg = (
                f"collection file {str(p)!r}: dataset {i} has unknown key(s) {', '.join(unknown)} "
                f"(allowed: {', '.join(COLLECTION_KEYS)})."
            )
            raise CLIError(msg)
        file = Path(str(entry["path"])).expanduser()
        file = file if file.is_absolute() else p.parent / file
        values = {k: None if entry.get(k) is None else str(entry[k]) for k in COLLECTION_KEYS[2:]}
        out.append(DatasetEntry(name=str(entry.get("name") or file.stem), path=file, **values))
    _check_unique_names([e.name for e in out], where=f"collection file {str(p)!r}")
    return out


def _check_unique_names(names: Sequence[str], *, where: str) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            msg = f"two datasets are named {n!r} in {where}: give them distinct names (a `name` in a collection file)."
            raise CLIError(msg)
        seen.add(n)


# ---------------------------------------------------------------------------------------------------- summaries
def graph_summary(mdata, key: str = "coexpression"):
    """One row per dataset: what the graph builder stored.

    ``mdata`` is a MuData, or a mapping from dataset name to AnnData.
    """
    import pandas as pd

    mods = mdata.mod if hasattr(mdata, "mod") else mdata
    rows = []
    for name, ad in mods.items():
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


def pd_table(history):
    """First, middle and last epochs of the loss history."""
    import pandas as pd

    df = pd.DataFrame(history) if not isinstance(history, pd.DataFrame) else history
    return df.iloc[[0, len(df) // 2, len(df) - 1]] if len(df) > 2 else df


def _print(args, text: str) -> None:
    """Results on stdout, unless -q."""
    if _verbosity(args) >= 2:
        print(text)


# ---------------------------------------------------------------------------------------------------- demo
def _demo(args) -> int:
    import time

    import mudata

    import musegnn_sc as msg

    t0 = time.perf_counter()
    out = _output_path(args.out, inputs=[], overwrite=args.overwrite, directory=True) if args.out else None
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

    gdata = msg.tl.train_musegnn(mdata, max_epochs=args.epochs, seed=args.seed, progress_bar=_verbosity(args) >= 2)
    history = gdata.uns["musegnn"]["history"]
    print(f"\nMuSe-GNN trained for {args.epochs} epochs (msg.tl.train_musegnn): {gdata.n_obs} dataset-gene embeddings")
    print(pd_table(history).to_string())

    _scanpy(_verbosity(args))
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
        import matplotlib.pyplot as plt

        with atomic_directory(out) as tmp:
            msg.pl.embedding(gdata, color=["leiden", "omics"], show=False, save=tmp / "umap.png")
            plt.close("all")
            gdata.write_h5ad(tmp / EMBEDDINGS_FILE)
            with mudata.set_options(pull_on_update=False):
                mdata.write(tmp / "toy_graphs.h5mu")
        print(f"\nWrote {out / 'umap.png'}, {out / EMBEDDINGS_FILE} and {out / 'toy_graphs.h5mu'}")
    print(f"Done in {time.perf_counter() - t0:.0f} s")
    return 0


# ---------------------------------------------------------------------------------------------------- graphs
def _graphs(args) -> int:
    import musegnn_sc as msg
    from musegnn_sc import _logging as logg

    src, kind = _input_file(args.input)
    out = _output_path(args.output, inputs=[src], overwrite=args.overwrite, suffix=f".{kind}")
    options = {
        "omics": args.omics,
        "n_top_genes": args.n_top_genes,
        "layer": args.layer,
        "selection": args.selection,
        "pval_cutoff": args.pval_cutoff,
        "correction": None if args.correction == "none" else args.correction,
        "n_features": args.n_features,
        "tissue": args.tissue,
        "species": args.species,
    }
    if args.gene_symbols is not None:
        options["gene_symbols"] = args.gene_symbols
    if args.device is not None:
        from musegnn_sc.pp._cscore import resolve_device

        # no CUDA, no torch: a one-line error before the data are read
        resolve_device(args.device, option="--device", default="no --device")
        options["device"] = args.device
    _check_graph_inputs(src, kind, args)
    data = _read(src, kind)
    t0 = logg.start(f"building the co-expression graph(s) of {str(src)!r}")
    if kind == "h5mu":
        msg.pp.build_coexpression_graphs(data, n_jobs=1 if args.n_jobs is None else args.n_jobs, **options)
        table = graph_summary(data)
    else:
        with _thread_limit(args.n_jobs):
            msg.pp.build_coexpression_graph(data, **options)
        table = graph_summary({src.stem: data})
    logg.finish(f"graph(s) of {str(src)!r} built", t0)
    _print(args, table.to_string())
    if kind == "h5mu":
        _write_h5mu_atomic(data, out)
    else:
        _write_h5ad_atomic(data, out)
    _print(args, f"Wrote {out}")
    return 0


def _h5_columns(var) -> list[str]:
    """Columns of a ``var`` data frame written by anndata (its index excluded)."""
    if "column-order" in var.attrs:
        return _h5_names(var.attrs["column-order"])
    index = var.attrs.get("_index", "_index")
    return [k for k in var if k not in (index, "__categories")]


def _check_graph_inputs(src: Path, kind: str, args) -> None:
    """``--layer``, ``--gene-symbols`` and spatial coordinates exist in every dataset of ``src`` (read with h5py)."""
    import h5py

    spatial = args.selection in ("sparkx", "moran") or (args.selection is None and args.omics == "spatial")
    if args.layer is None and args.gene_symbols is None and not spatial:
        return
    try:
        with h5py.File(src, "r") as f:
            _check_datasets_have(f, kind, src, args, spatial)
    except (OSError, KeyError, ValueError) as err:
        raise _unreadable(src, err) from None


def _check_datasets_have(f, kind: str, src: Path, args, spatial: bool) -> None:
    """The checks of :func:`_check_graph_inputs` on the open file ``f``."""
    import h5py

    for mod, group in _h5_datasets(f, kind):
        where = repr(str(src)) if mod is None else f"modality {mod!r} of {str(src)!r}"
        if args.layer is not None:
            layers = list(group["layers"]) if isinstance(group.get("layers"), h5py.Group) else []
            if args.layer not in layers:
                msg = (
                    f"--layer {args.layer!r} is not a layer of {where} (layers: "
                    f"{', '.join(map(repr, layers)) or 'none'}): pass the layer that holds raw counts, or leave "
                    "--layer out to use X."
                )
                raise CLIError(msg)
        var = group.get("var")
        if args.gene_symbols is not None and isinstance(var, h5py.Group):
            columns = _h5_columns(var)
            if args.gene_symbols not in columns:
                shown = ", ".join(map(repr, columns[:10])) + (", ..." if len(columns) > 10 else "")
                msg = (
                    f"--gene-symbols {args.gene_symbols!r} is not a var column of {where} (columns: "
                    f"{shown or 'none'}): pass the column that holds the gene symbols, or leave --gene-symbols "
                    "out to name genes by var_names."
                )
                raise CLIError(msg)
        obsm = group.get("obsm")
        if spatial and not (isinstance(obsm, h5py.Group) and "spatial" in obsm):
            why = f"--selection {args.selection}" if args.selection else "--omics spatial (selection sparkx)"
            keys = ", ".join(map(repr, obsm)) if isinstance(obsm, h5py.Group) else ""
            msg = (
                f"{why} needs spot coordinates in obsm['spatial'], which {where} lacks (obsm keys: "
                f"{keys or 'none'}): store them there, or pass --selection pearson_residuals (with --omics rna "
                "if the data are not spatial)."
            )
            raise CLIError(msg)


@contextlib.contextmanager
def _thread_limit(n_threads: int | None) -> Iterator[None]:
    """Bound BLAS and numba threads (one dataset: ``--n-jobs`` is the number of threads it may use)."""
    if n_threads is None or n_threads < 1:
        yield
        return
    import numba
    from threadpoolctl import threadpool_limits

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(n_threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        with threadpool_limits(limits=n_threads):
            yield
    finally:
        numba.set_num_threads(before)


# ---------------------------------------------------------------------------------------------------- train
#: Descriptors of a dataset that a collection entry may give and the stored graph records.
_DESCRIPTORS = ("omics", "tissue", "species")


@dataclass
class _Source:
    """One input file of ``train``/``map``, checked: its datasets' names and what their stored graphs record."""

    file: Path
    kind: str
    entry: DatasetEntry | None
    #: Dataset name -> descriptors of its stored graph (``None``: no graph), in file order.
    graphs: dict[str, dict[str, str] | None]


def _h5_text(node) -> str | None:
    """A scalar string written by anndata (``None`` for anything else)."""
    import h5py

    if not isinstance(node, h5py.Dataset) or node.shape != ():
        return None
    value = node[()]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _h5_names(values) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]


def _h5_datasets(f, kind: str) -> list[tuple[str | None, Any]]:
    """``(modality name, group)`` of every dataset of an open ``.h5ad`` (one, name ``None``) or ``.h5mu`` file."""
    if kind == "h5ad":
        return [(None, f)]
    mods = f.get("mod")
    if mods is None:
        return []
    order = _h5_names(mods.attrs.get("mod-order", []))
    names = [n for n in order if n in mods] + [n for n in mods if n not in order]
    return [(n, mods[n]) for n in names]


def _stored_graphs(file: Path, kind: str, key: str = "coexpression") -> dict[str | None, dict[str, str] | None]:
    """Modality name (``None`` for an ``.h5ad``) -> descriptors of its stored graph, read with h5py (no data read)."""
    import h5py

    out: dict[str | None, dict[str, str] | None] = {}
    try:
        with h5py.File(file, "r") as f:
            for name, group in _h5_datasets(f, kind):
                uns = group.get(f"uns/{key}")
                if not isinstance(uns, h5py.Group):
                    out[name] = None
                    continue
                out[name] = {field: _h5_text(uns.get(field)) or "unknown" for field in _DESCRIPTORS}
    except (OSError, KeyError, ValueError) as err:
        raise _unreadable(file, err) from None
    return out


def _plan_datasets(paths: Sequence[str]) -> list[_Source]:
    """Check every dataset of ``train``/``map`` before anything is read or logged.

    Files exist and are ``.h5ad``/``.h5mu``, none is given twice, every dataset holds a graph whose descriptors agree
    with its collection entry, and dataset names are distinct. The graphs are inspected with h5py; nothing is loaded.
    """
    plan: list[tuple[Path, str, DatasetEntry | None]] = []  # (file, kind, collection entry)
    for raw in paths:
        if Path(raw).suffix.lower() in _COLLECTION_SUFFIXES:
            for entry in read_collection(raw):
                file, kind = _input_file(
                    entry.path, accept=("h5ad",), what=f"dataset {entry.name!r} of collection {raw!r}: file"
                )
                plan.append((file, kind, entry))
        else:
            file, kind = _input_file(raw)
            plan.append((file, kind, None))
    files = [f for f, _, _ in plan]
    for i, f in enumerate(files):
        for g in files[:i]:
            if _same_path(f, g):
                msg = f"{str(f)!r} is given twice: pass each dataset once."
                raise CLIError(msg)
    sources: list[_Source] = []
    origin: dict[str, Path] = {}
    for file, kind, entry in plan:
        stored = _stored_graphs(file, kind)
        if kind == "h5mu" and not stored:
            msg = f"{str(file)!r} is a MuData without modalities: pass a file with at least one dataset."
            raise CLIError(msg)
        graphs = {
            (mod if mod is not None else (entry.name if entry else file.stem)): info for mod, info in stored.items()
        }
        for name, info in graphs.items():
            if name in origin:
                msg = (
                    f"two datasets are named {name!r} ({str(origin[name])!r} and {str(file)!r}): give them distinct "
                    "names, e.g. in a collection file with a `name` per dataset."
                )
                raise CLIError(msg)
            _check_descriptors(name, file, entry, info)
            origin[name] = file
        sources.append(_Source(file, kind, entry, graphs))
    return sources


def _read_datasets(sources: Sequence[_Source]) -> tuple[list[Path], dict[str, Any]]:
    """The input files and one AnnData per dataset (name -> AnnData), with collection descriptors applied."""
    from musegnn_sc import _logging as logg

    datasets: dict[str, Any] = {}
    for src in sources:
        logg.logger.info("reading the graph(s) of %s", src.file)
        data = _read(src.file, src.kind, backed=src.kind == "h5ad")
        if src.kind == "h5mu":
            items = list(data.mod.items())
        else:
            items = [(next(iter(src.graphs)), data)]
        items = [(name, _graph_only(ad)) for name, ad in items]
        if src.kind == "h5ad":
            data.file.close()
        for name, ad in items:
            _check_graph(ad, name, src.file, src.entry)  # checked in `_plan_datasets`; fills in 'unknown' descriptors
            datasets[name] = ad
    return [src.file for src in sources], datasets


def _graph_only(adata):
    """What training reads of a dataset: genes, graph, node features, descriptors; no cells (counts stay on disk)."""
    import anndata
    import pandas as pd

    return anndata.AnnData(
        obs=pd.DataFrame(index=pd.Index([], dtype=str)),
        var=adata.var.copy(),
        varm=dict(adata.varm.items()),
        varp=dict(adata.varp.items()),
        uns=dict(adata.uns),
    )


def _check_descriptors(
    name: str, file: Path, entry: DatasetEntry | None, stored: Any, key: str = "coexpression"
) -> None:
    """The dataset holds a graph (``stored``: its ``uns[key]``, ``None`` if absent) that agrees with its collection entry."""
    if stored is None:
        within = f"modality {name!r} of " if file.suffix.lower() == ".h5mu" else ""
        msg = (
            f"{within}{str(file)!r} has no co-expression graph (uns[{key!r}]): build it first with "
            f"`{PROG} graphs {file} -o {file.with_name(file.stem + '_graphs' + file.suffix)}`."
        )
        raise CLIError(msg)
    if entry is None:
        return
    for field in _DESCRIPTORS:
        wanted = getattr(entry, field)
        recorded = str(stored.get(field, "unknown"))
        if wanted is None or wanted == recorded or recorded == "unknown":
            continue
        msg = (
            f"dataset {name!r}: the collection gives {field} {wanted!r} but the graph in {str(file)!r} was built with "
            f"{field} {recorded!r}: fix the collection, or rebuild the graph with `{PROG} graphs ... --{field} {wanted}`."
        )
        raise CLIError(msg)


def _check_graph(adata, name: str, file: Path, entry: DatasetEntry | None, key: str = "coexpression") -> None:
    """The dataset holds a graph; descriptors of a collection entry agree with it (or fill in 'unknown')."""
    _check_descriptors(name, file, entry, adata.uns.get(key), key)
    if entry is None:
        return
    info = adata.uns[key]
    for field in _DESCRIPTORS:
        wanted = getattr(entry, field)
        if wanted is not None and str(info.get(field, "unknown")) == "unknown":
            info[field] = wanted


def _as_mudata(datasets: dict[str, Any]):
    """One MuData of unpaired datasets (graphs only, see :func:`_graph_only`)."""
    import mudata

    with mudata.set_options(pull_on_update=False):
        return mudata.MuData(datasets, axis=1)


def _library_default(name: str):
    """Default of a training option, as the library defines it (so the help never drifts from the code)."""
    from musegnn_sc.model._model import MuSeGNN
    from musegnn_sc.tl._train import train_musegnn

    found = False
    for func in (train_musegnn, MuSeGNN.train, MuSeGNN.__init__):
        p = inspect.signature(func).parameters.get(name)
        if p is not None and p.default is not inspect.Parameter.empty:
            if p.default is not None:
                return p.default
            found = True  # train_musegnn's `max_epochs=None` means "MuSeGNN.train's default": look further
    if found:
        return None
    msg = f"no default for {name!r}"  # pragma: no cover - a renamed library option
    raise KeyError(msg)


def _map_default(name: str):
    """Default of an option of ``map`` that goes to ``MuSeGNN.load`` (the reference's offloading)."""
    from musegnn_sc.model._model import MuSeGNN

    return inspect.signature(MuSeGNN.load).parameters[name].default


#: Command-line destination -> keyword of :func:`musegnn_sc.tl.train_musegnn` (or of ``MuSeGNN.train`` through it).
_TRAIN_OPTIONS = {
    "epochs": "max_epochs",
    "n_latent": "n_latent",
    "share_by": "share_by",
    "decoder": "decoder",
    "sim_reduction": "sim_reduction",
    "lambda_sim": "lambda_sim",
    "lambda_contrastive": "lambda_contrastive",
    "contrastive_anchors": "contrastive_anchors",
    "lr_encoder": "lr_encoder",
    "lr_decoder": "lr_decoder",
    "accelerator": "accelerator",
    "devices": "devices",
    "strategy": "strategy",
    "checkpoint_every": "checkpoint_every",
    "decoder_precision": "decoder_precision",
    "reconstruction_fraction": "reconstruction_fraction",
}
#: Command-line destination -> keyword of :func:`musegnn_sc.tl.map_to_reference` (or of ``MuSeGNN.train`` through it).
_MAP_OPTIONS = {
    "epochs": "max_epochs",
    "decoder_precision": "decoder_precision",
    "reconstruction_fraction": "reconstruction_fraction",
}


@contextlib.contextmanager
def _lightning_logs(show: bool) -> Iterator[None]:
    """Lightning's start-up messages (accelerator found, tips) only with -v; its progress bar is separate."""
    import logging

    import lightning.pytorch  # noqa: F401 - sets its loggers' levels when first imported: import it before changing them

    names = ("lightning.pytorch", "lightning.fabric")
    levels = {n: logging.getLogger(n).level for n in names}
    if not show:
        for n in names:
            logging.getLogger(n).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


def _input_paths(inputs: Sequence[str]) -> list[Path]:
    """Every file a verb reads: the files given, and the collection files with the datasets they list."""
    files: list[Path] = []
    for raw in inputs:
        if Path(raw).suffix.lower() in _COLLECTION_SUFFIXES:
            files.append(_existing_file(raw, "collection file"))
            files.extend(e.path for e in read_collection(raw))
        else:
            files.append(Path(raw))
    return files


def _check_model_outputs(args, files: Sequence[Path]) -> tuple[Path, Path | None]:
    """The model directory and the optional embeddings file of ``train``/``map``, checked before any work."""
    out = _output_path(args.output, inputs=files, overwrite=args.overwrite, directory=True, what="model directory")
    emb = None
    if args.embeddings is not None:
        emb = _output_path(args.embeddings, inputs=files, overwrite=args.overwrite, suffix=".h5ad", what="embeddings")
        if _inside(emb, out):
            msg = f"--embeddings {str(emb)!r} is inside the model directory, which is replaced as a whole: put it outside."
            raise CLIError(msg)
    return out, emb


def _save_model_outputs(args, model, gdata, out: Path, emb: Path | None, title: str) -> str:
    """Print the loss history, write the model directory (and the embeddings file) atomically; return what was written."""
    history = model.history
    if len(history):
        _print(args, f"{title} (first, middle and last epochs):\n{pd_table(history).to_string()}")
    with atomic_directory(out) as tmp:
        model.save(tmp, overwrite=True)
        gdata.write_h5ad(tmp / EMBEDDINGS_FILE)
        history.to_csv(tmp / HISTORY_FILE, sep="\t")
    written = [str(out)]
    if emb is not None:
        _write_h5ad_atomic(gdata, emb)
        written.append(str(emb))
    return " and ".join(written)


def _check_hardware(accelerator: str | None, devices: Any) -> None:
    """Refuse an ``--accelerator`` or ``--devices`` the machine lacks, before any data are read.

    Lightning would say so only once the data are read and training starts.
    """
    if accelerator not in ("gpu", "cuda", "mps", "tpu"):
        return  # auto, cpu: always available
    import torch

    if accelerator == "tpu":
        from lightning.pytorch.accelerators import XLAAccelerator

        if not XLAAccelerator.is_available():
            msg = "--accelerator tpu but no TPU is available (torch_xla finds none): use --accelerator cpu or auto."
            raise CLIError(msg)
        return
    mps = bool(torch.backends.mps.is_available())
    if accelerator == "mps" or (accelerator == "gpu" and mps and not torch.cuda.is_available()):
        if not mps:
            msg = (
                "--accelerator mps but this machine has no Apple GPU that torch can use: use --accelerator cpu or auto."
            )
            raise CLIError(msg)
        return
    if not torch.cuda.is_available():
        build = " (this torch is a CPU-only build)" if torch.version.cuda is None else ""
        msg = (
            f"--accelerator {accelerator} but torch finds no CUDA GPU on this machine{build}: train with --accelerator "
            "cpu (or auto), or on a machine with a GPU."
        )
        raise CLIError(msg)
    count = torch.cuda.device_count()
    wanted = devices if isinstance(devices, list) else None
    if isinstance(devices, int) and devices > count:
        msg = f"--devices {devices} asks for {devices} GPUs but this machine has {count}: pass --devices {count} or -1 (all)."
        raise CLIError(msg)
    if wanted is not None and any(i < 0 or i >= count for i in wanted):
        msg = (
            f"--devices {','.join(map(str, wanted))} names GPUs this machine lacks (it has {count}, numbered 0 to "
            f"{count - 1}): pass indices below {count}."
        )
        raise CLIError(msg)


#: ``--offload`` -> the ``offload`` argument of :class:`musegnn_sc.model.MuSeGNN`.
_OFFLOAD = {"auto": "auto", "yes": True, "no": False}
#: The library's warnings about an ``offload``/``offload_dir`` that was not used; the command line says it itself.
_OFFLOAD_IGNORED = r"`offload(=True|_dir)` is ignored"


def _check_combinations(options: dict[str, Any]) -> None:
    """The option combinations training refuses (``check_train_choices``), as a :class:`CLIError` with the flags."""
    from musegnn_sc.model._model import check_train_choices

    train_options = {k: v for k, v in options.items() if k not in ("offload", "offload_dir")}
    try:
        check_train_choices(train_options, offloaded=options.get("offload") is True)
    except ValueError as err:
        flags = {"`checkpoint_dir`": "--checkpoint-dir", "`strategy=": "--strategy ", "`accelerator='cpu'`": "--accelerator cpu",
                 "`accelerator=": "--accelerator ", "`offload=False`": "--offload no"}  # fmt: skip
        text = str(err)
        for name, flag in flags.items():
            text = text.replace(name, flag)
        raise CLIError(text.replace("`", "")) from None


def _offload_options(args) -> dict[str, Any]:
    """``offload``/``offload_dir`` keywords of ``--offload``/``--offload-dir``; a bad directory is a :class:`CLIError`."""
    options: dict[str, Any] = {}
    if args.offload is not None:
        options["offload"] = _OFFLOAD[args.offload]
    if args.offload_dir is not None:
        if args.offload == "no":
            msg = (
                "--offload-dir is where offloaded decoders go, and --offload no keeps them in memory: drop one of them."
            )
            raise CLIError(msg)
        folder = Path(args.offload_dir)
        if not folder.exists():
            msg = (
                f"--offload-dir {str(folder)!r} does not exist: create it (the decoders' temporary file goes there), "
                "or pass an existing directory."
            )
            raise CLIError(msg)
        if not folder.is_dir():
            msg = f"--offload-dir {str(folder)!r} is a file: pass a directory."
            raise CLIError(msg)
        if not os.access(folder, os.W_OK | os.X_OK):
            msg = f"--offload-dir {str(folder)!r} is not writable: pass a directory you can write to."
            raise CLIError(msg)
        options["offload_dir"] = folder
    return options


def _offload_unused(args, model) -> None:
    """Say when ``--offload yes`` or ``--offload-dir`` had no effect (the library's warning names Python arguments)."""
    if model.module.offloaded:
        return
    if args.offload == "yes":
        warnings.warn(
            "--offload yes is ignored: the inner-product decoders have two parameters per dataset, nothing to offload.",
            UserWarning,
            stacklevel=2,
        )
    elif args.offload_dir is not None:
        warnings.warn(
            f"--offload-dir {args.offload_dir!r} was not used: the decoders fit in memory, where --offload auto keeps "
            "them; pass --offload yes to put them in that directory anyway.",
            UserWarning,
            stacklevel=2,
        )


@contextlib.contextmanager
def _held_log() -> Iterator[None]:
    """Hold the package logger's messages back while a check may still fail; emit them once the block succeeds.

    A failed check is then one line on stderr, even when the work before it (loading a reference model) logged.
    """
    import logging

    from musegnn_sc._logging import logger

    held: list[logging.LogRecord] = []

    class _Hold(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            held.append(record)

    handlers = logger.handlers[:]
    logger.handlers = [_Hold()]
    try:
        yield
    finally:
        logger.handlers = handlers
    for record in held:
        logger.handle(record)


def _train(args) -> int:
    import musegnn_sc as msg

    # every input is checked before anything is read or logged; outputs against the inputs' paths first
    out, emb = _check_model_outputs(args, _input_paths(args.inputs))
    ckpt = None
    if args.checkpoint_dir is not None:
        ckpt = Path(args.checkpoint_dir)
        if _inside(ckpt, out):
            msg = (
                f"--checkpoint-dir {str(ckpt)!r} is inside the model directory {str(out)!r}, which is replaced as a "
                "whole when the model is saved: put the checkpoints outside it."
            )
            raise CLIError(msg)
        if ckpt.exists() and not ckpt.is_dir():
            msg = f"--checkpoint-dir {str(ckpt)!r} is a file: pass a directory."
            raise CLIError(msg)
    elif args.resume:
        msg = "--resume continues from the checkpoints of an earlier run: pass its --checkpoint-dir."
        raise CLIError(msg)
    offload = _offload_options(args)
    _check_hardware(args.accelerator, args.devices)
    options = {kw: getattr(args, dest) for dest, kw in _TRAIN_OPTIONS.items() if getattr(args, dest) is not None}
    options.update(offload)
    if args.early_stopping:
        options["early_stopping"] = True
    if ckpt is not None:
        options.update(checkpoint_dir=ckpt, resume=args.resume)
    _check_combinations(options)
    sources = _plan_datasets(args.inputs)

    _, datasets = _read_datasets(sources)
    mdata = _as_mudata(datasets)
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    with _lightning_logs(_verbosity(args) >= 3), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_OFFLOAD_IGNORED)
        try:
            gdata, model = msg.tl.train_musegnn(
                mdata, seed=args.seed, return_model=True, progress_bar=_verbosity(args) >= 2, **options
            )
        except MisconfigurationException as err:  # hardware `_check_hardware` cannot see, e.g. a --strategy
            msg_ = f"Lightning refused the hardware options ({' '.join(str(err).split())}): check --accelerator, --devices and --strategy."
            raise CLIError(msg_) from None
    _offload_unused(args, model)
    written = _save_model_outputs(args, model, gdata, out, emb, "Loss history")
    _print(args, f"Wrote {written} ({gdata.n_obs} gene embeddings from {len(datasets)} datasets)")
    return 0


# ---------------------------------------------------------------------------------------------------- map
def _check_query_names(sources: Sequence[_Source], reference: Sequence[str], where: Path) -> None:
    """Query datasets named like a reference dataset: one line with the command-line way to rename them."""
    taken = set(reference)
    for src in sources:
        for name in src.graphs:
            if name not in taken:
                continue
            shown = ", ".join(map(repr, list(reference)[:6])) + (
                f", ... ({len(reference)} in all)" if len(reference) > 6 else ""
            )
            new = f"{name}_query"
            if src.entry is not None:
                how = f"change its `name` in the collection file (e.g. `name: {new}`)"
            elif src.kind == "h5mu":
                how = (
                    f"rename the modality in {str(src.file)!r}, or write it to an .h5ad file and list that in a "
                    f"collection file with `name: {new}`"
                )
            else:
                how = (
                    f"list the file in a collection file (.yaml) with `path: {src.file}` and `name: {new}`, or rename "
                    "the file (a dataset is named after its file)"
                )
            msg = (
                f"query dataset {name!r} ({str(src.file)!r}) has the name of a dataset of the reference {str(where)!r} "
                f"({shown}); names identify datasets in the combined model: {how}."
            )
            raise CLIError(msg)


def _map(args) -> int:
    import musegnn_sc as msg
    from musegnn_sc.model._model import MODEL_FILE

    reference = Path(args.reference)
    if not reference.is_dir():
        what = "is a file" if reference.exists() else "does not exist"
        msg_ = f"--reference {str(reference)!r} {what}: pass the MODEL_DIR written by `{PROG} train`."
        raise CLIError(msg_)
    if not (reference / MODEL_FILE).is_file():
        msg_ = f"--reference {str(reference)!r} holds no {MODEL_FILE}: pass the MODEL_DIR written by `{PROG} train`."
        raise CLIError(msg_)
    out, emb = _check_model_outputs(args, [reference, *_input_paths(args.inputs)])
    offload = _offload_options(args)
    sources = _plan_datasets(args.inputs)
    with _held_log(), warnings.catch_warnings():  # loading an atlas logs where its decoders go
        warnings.filterwarnings("ignore", message=_OFFLOAD_IGNORED)
        model_ref = msg.model.MuSeGNN.load(reference, **offload)
        _check_query_names(sources, [g.name for g in model_ref.graphs], reference)

    _, datasets = _read_datasets(sources)
    mdata = _as_mudata(datasets)
    options = {kw: getattr(args, dest) for dest, kw in _MAP_OPTIONS.items() if getattr(args, dest) is not None}
    with _lightning_logs(_verbosity(args) >= 3), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_OFFLOAD_IGNORED)
        gdata, model = msg.tl.map_to_reference(
            mdata,
            model_ref,
            freeze=not args.fine_tune,
            seed=args.seed,
            include_reference=not args.query_only,
            return_model=True,
            progress_bar=_verbosity(args) >= 2,
            **options,
        )
    _offload_unused(args, model)
    written = _save_model_outputs(args, model, gdata, out, emb, "Loss history of the mapping")
    _print(
        args,
        f"Wrote {written} ({len(datasets)} dataset(s) mapped into the {len(model_ref.graphs)}-dataset reference; "
        f"{gdata.n_obs} gene embeddings)",
    )
    return 0


# ---------------------------------------------------------------------------------------------------- modules
def _modules(args) -> int:
    import musegnn_sc as msg
    from musegnn_sc._keys import EMBEDDING
    from musegnn_sc.tl._enrichment import as_gene_sets

    src, kind = _input_file(args.input, accept=("h5ad",), what="gene embeddings")
    inputs = [src]
    gene_sets = None
    if args.gmt is not None:
        gmt = _existing_file(args.gmt, "gene-set file")
        inputs.append(gmt)
        try:
            gene_sets = as_gene_sets(gmt)
        except UnicodeDecodeError:
            msg = f"gene-set file {str(gmt)!r} is not a text file: pass a GMT file (name, description, genes...)."
            raise CLIError(msg) from None
    out = _output_path(args.output, inputs=inputs, overwrite=args.overwrite, directory=True)
    gdata = _read(src, kind)
    use_rep = args.use_rep or EMBEDDING
    if use_rep not in gdata.obsm:
        msg = (
            f"{str(src)!r} has no obsm[{use_rep!r}]: pass the gene embeddings written by `{PROG} train` "
            f"(MODEL_DIR/{EMBEDDINGS_FILE} or its --embeddings file), or name the embedding with --use-rep."
        )
        raise CLIError(msg)
    if "gene" not in gdata.obs:
        msg = f"{str(src)!r} has no obs['gene'] column: pass the gene embeddings written by `{PROG} train`."
        raise CLIError(msg)
    if gene_sets is not None:
        symbols = set(gdata.obs["gene"].astype(str))
        n_hit = len(symbols & {g for genes in gene_sets.values() for g in genes})
        if n_hit == 0:
            warnings.warn(
                f"No gene of {str(src)!r} is in {str(args.gmt)!r}: the enrichment table will be empty. Check that "
                "both use the same identifiers (symbols vs Ensembl IDs) and species.",
                UserWarning,
                stacklevel=2,
            )

    _scanpy(_verbosity(args))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    msg.tl.gene_modules(
        gdata, resolution=args.resolution, n_neighbors=args.n_neighbors, use_rep=use_rep, random_state=args.seed
    )
    summary = gdata.uns["leiden"]["summary"]
    columns = [c for c in ("gene", "dataset", "omics", "tissue", "species") if c in gdata.obs]
    membership = gdata.obs[columns].assign(module=gdata.obs["leiden"].astype(str))
    membership.index.name = "id"
    results = None
    if gene_sets is not None:
        results = msg.tl.enrichment(gdata, gene_sets, min_size=args.min_size, max_size=args.max_size)
        if results.empty:
            warnings.warn(
                f"No gene set of {str(args.gmt)!r} overlaps a module (sets with {args.min_size}-{args.max_size} "
                "embedded genes are tested): enrichment.tsv is empty and enrichment.png is not drawn.",
                UserWarning,
                stacklevel=2,
            )
    color = [c for c in ("leiden", "dataset", "omics") if c in gdata.obs]
    with atomic_directory(out) as tmp:
        membership.to_csv(tmp / "modules.tsv", sep="\t")
        summary.to_csv(tmp / "module_summary.tsv", sep="\t")
        msg.pl.embedding(gdata, color=color, show=False, save=tmp / "umap.png")
        plt.close("all")
        if results is not None:
            results.to_csv(tmp / "enrichment.tsv", sep="\t", index=False)
            if not results.empty:
                _enrichment_figure(results, args.fdr, tmp / "enrichment.png")
        gdata.write_h5ad(tmp / "gene_modules.h5ad")
    n_sig = "" if results is None else f", {int((results['fdr'] <= args.fdr).sum())} enriched (module, set) pairs"
    _print(
        args,
        summary[[c for c in ("n_genes", "n_unique_genes", "n_dataset", "top_dataset") if c in summary]].to_string(),
    )
    _print(args, f"Wrote {out}/: {summary.shape[0]} modules{n_sig}")
    return 0


def _enrichment_figure(results, fdr: float, path: Path) -> None:
    import matplotlib.pyplot as plt

    import musegnn_sc as msg

    if (results["fdr"] <= fdr).any():
        msg.pl.enrichment(results, fdr_cutoff=fdr, show=False, save=path)
    else:
        warnings.warn(
            f"No module is enriched in a gene set at FDR <= {fdr}: enrichment.png shows the top terms whatever "
            "their FDR.",
            UserWarning,
            stacklevel=2,
        )
        msg.pl.enrichment(results, fdr_cutoff=None, show=False, save=path)
    plt.close("all")


# ---------------------------------------------------------------------------------------------------- parser
class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keep the line breaks of descriptions and epilogs (examples)."""


def _type(convert: Callable[[str], Any], what: str, check: Callable[[Any], bool] | None = None):
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if check is not None and not check(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    parse.__name__ = what
    return parse


_positive_int = _type(int, "a positive integer", lambda v: v >= 1)
_positive_float = _type(float, "a positive number", lambda v: v > 0)
_non_negative_float = _type(float, "a number >= 0", lambda v: v >= 0)
_probability = _type(float, "a number in (0, 1]", lambda v: 0 < v <= 1)


def _n_features(text: str) -> int | None:
    if text.lower() == "none":
        return None
    return _positive_int(text)


def _devices(text: str):
    """Lightning's ``devices``: 'auto', a count (-1: all), or a comma-separated list of device indices."""
    if text == "auto":
        return text
    try:
        if "," in text:
            return [int(t) for t in text.split(",") if t.strip()]
        return int(text)
    except ValueError:
        msg = f"{text!r} is not 'auto', a number of devices or a list of device indices such as 0,1"
        raise argparse.ArgumentTypeError(msg) from None


def _common(parser: argparse.ArgumentParser, *, writes: bool = True) -> None:
    group = parser.add_argument_group("output and logging")
    if writes:
        group.add_argument(
            "--overwrite", action="store_true", help="replace existing outputs (inputs are never replaced)"
        )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more messages: hints, and the full traceback of an error",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="count",
        default=0,
        help="fewer messages: -q shows warnings only (no progress bar, no tables), -qq errors only",
    )


def _add_graphs(sub) -> None:
    p = sub.add_parser(
        "graphs",
        help="build the co-expression graph of an .h5ad dataset (or of every dataset of an .h5mu)",
        description=(
            "Select the informative genes of a dataset, estimate their co-expression with CS-CORE, keep the\n"
            "significant gene pairs as edges and compute node features (msg.pp.build_coexpression_graph). The output\n"
            "is the input data with the graph added (same format: .h5ad -> .h5ad, .h5mu -> .h5mu). One job per\n"
            "dataset is the natural unit of a workflow."
        ),
        epilog=f"example:\n  {PROG} graphs heart.h5ad -o graphs/heart.h5ad --tissue heart --species human",
        formatter_class=_Formatter,
    )
    p.add_argument(
        "input", metavar="IN", help="an .h5ad file (one dataset) or an .h5mu file (one dataset per modality)"
    )
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output file, same format as IN")
    g = p.add_argument_group("dataset")
    g.add_argument(
        "--omics",
        choices=["rna", "atac", "spatial"],
        default=None,
        help="data type (default: uns['omics'], else the modality name's prefix, else spatial if obsm['spatial'] "
        "exists, else rna); atac means gene activity (msg.pp.gene_activity)",
    )
    g.add_argument("--tissue", default=None, help="tissue, recorded for the model (default: uns['tissue'] or unknown)")
    g.add_argument(
        "--species", default=None, help="species, recorded for the model (default: uns['species'] or unknown)"
    )
    g.add_argument("--layer", default=None, help="layer with raw integer counts (default: X)")
    g.add_argument(
        "--gene-symbols",
        default=None,
        metavar="COLUMN",
        help="var column of gene symbols, for data whose var_names are IDs (Ensembl...): nodes are named by symbol, "
        "so datasets are matched by symbol (default: var_names)",
    )
    g = p.add_argument_group("graph")
    g.add_argument(
        "--n-top-genes",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="genes per graph: the most variable (RNA, ATAC) or spatially variable (spatial) (default: %(default)s)",
    )
    g.add_argument(
        "--selection",
        choices=["pearson_residuals", "sparkx", "moran"],
        default=None,
        help="gene selection (default: pearson_residuals for rna and atac, sparkx for spatial)",
    )
    g.add_argument(
        "--pval-cutoff",
        type=_probability,
        default=0.005,
        metavar="P",
        help="connect two genes when their CS-CORE p-value is below P (default: %(default)s)",
    )
    g.add_argument(
        "--correction",
        choices=["none", "fdr_bh"],
        default="none",
        help="multiple-testing correction of the p-values before the cutoff (default: %(default)s, as the paper)",
    )
    g.add_argument(
        "--n-features",
        type=_n_features,
        default=128,
        metavar="K",
        help="width of the node features (SVD of the Pearson-residual profiles); 'none' keeps the full profile over "
        "cells (default: %(default)s)",
    )
    g.add_argument(
        "--n-jobs",
        type=int,
        default=None,
        metavar="N",
        help="an .h5mu: datasets processed in parallel (default 1; -1: every core); an .h5ad: threads the dataset "
        "may use (default: all)",
    )
    g.add_argument(
        "--device",
        default=None,
        metavar="DEVICE",
        help="run CS-CORE in torch float64 on this device: cuda, cuda:N (a GPU) or cpu (default: the CPU path, "
        "numba and BLAS; same results)",
    )
    _common(p)
    p.set_defaults(func=_graphs)


def _model_outputs(p: argparse.ArgumentParser, what: str) -> None:
    """``-o MODEL_DIR`` and ``--embeddings``, the outputs of the verbs that write a model."""
    p.add_argument("-o", "--output", required=True, metavar="MODEL_DIR", help=what)
    p.add_argument(
        "--embeddings",
        default=None,
        metavar="FILE.h5ad",
        help=f"also write the gene embeddings here (they are always in MODEL_DIR/{EMBEDDINGS_FILE})",
    )


def _add_decoder_cost(g, *, inherited: bool = False) -> None:
    """``--reconstruction-fraction`` and ``--decoder-precision``: options of ``MuSeGNN.train`` (train and map).

    ``inherited``: the map verb, whose reconstruction fraction defaults to the reference's.
    """
    d = _library_default
    g.add_argument(
        "--reconstruction-fraction",
        type=_probability,
        default=None,
        metavar="F",
        help="fraction of each graph's genes whose adjacency rows the reconstruction loss uses at a step, drawn anew "
        "every step: an unbiased estimate of the full loss at that fraction of the decoder's cost; 1: every row, "
        "as the paper (default: " + ("the reference's" if inherited else str(d("reconstruction_fraction"))) + ")",
    )
    g.add_argument(
        "--decoder-precision",
        choices=["auto", "float32", "bfloat16"],
        default=None,
        help="arithmetic of the decoders' gene x gene layers, the bulk of a step: bfloat16 products with float32 "
        "accumulation, or float32; auto: bfloat16 where the hardware computes it natively (recent GPUs, CPUs with AMX "
        f"or AVX-512 BF16), float32 elsewhere (default: {d('decoder_precision')})",
    )


def _add_offload(g, *, choices: list[str], default: Any, what: str = "the decoders") -> None:
    """``--offload`` and ``--offload-dir`` (train and map)."""
    g.add_argument(
        "--offload",
        choices=choices,
        default=None,
        help=f"keep {what} (3 x genes^2 weights per dataset) in a temporary file, with only the decoder of the step "
        "in memory, for atlases of hundreds of datasets (same results); auto: when their training state would take "
        f"more than half of the free memory (default: {default})",
    )
    g.add_argument(
        "--offload-dir",
        default=None,
        metavar="DIR",
        help="existing directory of that temporary file, deleted when the command ends (default: the system's "
        "temporary directory, TMPDIR); choose a local disk with room",
    )


def _add_train(sub) -> None:
    d = _library_default
    p = sub.add_parser(
        "train",
        help="train MuSe-GNN on the graphs of several datasets; save the model and the gene embeddings",
        description=(
            "Train one MuSe-GNN model on the co-expression graphs of every dataset given (msg.tl.train_musegnn) and\n"
            f"save it to MODEL_DIR (model.pt, read with msg.model.MuSeGNN.load; {EMBEDDINGS_FILE}, the gene\n"
            f"embeddings, one row per dataset and gene; {HISTORY_FILE}, the losses per epoch).\n\n"
            "Datasets are .h5ad files (one dataset each, named after the file), .h5mu files (one dataset per\n"
            "modality) or collection files (.toml, .yaml) listing datasets:\n\n"
            "  datasets:\n"
            "    - path: graphs/heart.h5ad     # relative to the collection file\n"
            "      name: heart                 # optional, default: the file name\n"
            "      omics: rna                  # optional: omics, tissue, species checked against the graph\n"
            "      tissue: heart\n"
            "      species: human"
        ),
        epilog=(
            f"examples:\n  {PROG} train graphs/*.h5ad -o model --embeddings genes.h5ad --epochs 150\n"
            f"  {PROG} train atlas.yaml -o model --offload yes --offload-dir /local/scratch   # hundreds of datasets"
        ),
        formatter_class=_Formatter,
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="GRAPHS",
        help=f"files written by `{PROG} graphs` (.h5ad, .h5mu) or collection files (.toml, .yaml)",
    )
    _model_outputs(p, "directory of the saved model")
    g = p.add_argument_group("model")
    g.add_argument(
        "--n-latent",
        type=_positive_int,
        default=None,
        metavar="D",
        help=f"embedding dimension (default: {d('n_latent')})",
    )
    g.add_argument(
        "--share-by",
        choices=["omics", "omics_tissue"],
        default=None,
        help=f"datasets sharing the graph transformer block: same omics (the paper) or same omics and tissue (the "
        f"authors' code) (default: {d('share_by')})",
    )
    g.add_argument(
        "--decoder",
        choices=["mlp", "inner_product"],
        default=None,
        help=f"graph decoder: the paper's MLP, or a two-parameter inner product for very large graphs "
        f"(default: {d('decoder')})",
    )
    g = p.add_argument_group("training")
    g.add_argument(
        "--epochs", type=_positive_int, default=None, metavar="N", help=f"training epochs (default: {d('max_epochs')})"
    )
    g.add_argument(
        "--seed", type=int, default=0, help="seed of the weights and of every random draw (default: %(default)s)"
    )
    g.add_argument(
        "--sim-reduction",
        choices=["sum", "mean"],
        default=None,
        help=f"cross-dataset similarity loss summed over the shared genes (paper text, collapses the space) or "
        f"averaged (authors' code) (default: {d('sim_reduction')})",
    )
    g.add_argument(
        "--contrastive-anchors",
        choices=["all", "different"],
        default=None,
        help="genes of the contrastive loss: also those the two datasets share, each pulled onto its copy and pushed "
        "from the other genes, or only those the partner lacks (paper; best for differential co-expression) "
        f"(default: {d('contrastive_anchors')})",
    )
    g.add_argument(
        "--lambda-sim",
        type=_non_negative_float,
        default=None,
        metavar="W",
        help=f"weight of the similarity loss; 0 switches it off (default: {d('lambda_sim')})",
    )
    g.add_argument(
        "--lambda-contrastive",
        type=_non_negative_float,
        default=None,
        metavar="W",
        help=f"weight of the contrastive (InfoNCE) loss; 0 switches it off (default: {d('lambda_contrastive')})",
    )
    g.add_argument(
        "--lr-encoder",
        type=_positive_float,
        default=None,
        metavar="LR",
        help=f"learning rate of the encoders (default: {d('lr_encoder')})",
    )
    g.add_argument(
        "--lr-decoder",
        type=_positive_float,
        default=None,
        metavar="LR",
        help=f"learning rate of the decoders (default: {d('lr_decoder')})",
    )
    g.add_argument(
        "--early-stopping",
        action="store_true",
        help=f"stop when the loss has not improved for {d('early_stopping_patience')} epochs",
    )
    _add_decoder_cost(g)
    g = p.add_argument_group("hardware and checkpoints")
    g.add_argument(
        "--accelerator",
        choices=["auto", "cpu", "gpu", "cuda", "mps", "tpu"],
        default=None,
        help=f"Lightning accelerator (default: {d('accelerator')})",
    )
    g.add_argument(
        "--devices",
        type=_devices,
        default=None,
        metavar="N|auto|I,J",
        help=f"number of devices (-1: all) or device indices such as 0,1 (default: {d('devices')})",
    )
    g.add_argument(
        "--strategy",
        default=None,
        help=f"Lightning strategy, e.g. ddp for several GPUs (default: {d('strategy')})",
    )
    _add_offload(g, choices=list(_OFFLOAD), default=d("offload"))
    g.add_argument(
        "--checkpoint-dir",
        default=None,
        metavar="DIR",
        help="write a Lightning checkpoint (last.ckpt) to DIR every --checkpoint-every epochs; outside MODEL_DIR",
    )
    g.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=None,
        metavar="N",
        help=f"epochs between checkpoints (default: {d('checkpoint_every')})",
    )
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue from DIR/last.ckpt of --checkpoint-dir up to --epochs in total (same result as one run)",
    )
    _common(p)
    p.set_defaults(func=_train)


def _add_map(sub) -> None:
    p = sub.add_parser(
        "map",
        help="map new datasets into a trained model (reference mapping); save the combined model and embeddings",
        description=(
            "Embed the datasets given into the gene space of a model saved by `musegnn-sc train`\n"
            "(msg.tl.map_to_reference): each query dataset gets its own layer and decoder, the reference's weights\n"
            "stay frozen (its embeddings do not move), and training steps on the query graphs with partners from\n"
            "the reference. The combined model (reference and query) is saved to MODEL_DIR like `train` does.\n\n"
            "Query datasets are given as for `train`: .h5ad files, .h5mu files or collection files (.toml, .yaml);\n"
            "their names must differ from the reference's datasets."
        ),
        epilog=f"example:\n  {PROG} map new_study.h5ad --reference model -o model_mapped --embeddings mapped.h5ad",
        formatter_class=_Formatter,
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="QUERY",
        help=f"query datasets with graphs (written by `{PROG} graphs`): .h5ad, .h5mu or collection files",
    )
    p.add_argument("--reference", required=True, metavar="MODEL_DIR", help=f"model directory written by `{PROG} train`")
    _model_outputs(p, "directory of the combined model")
    p.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="mapping epochs (default: as many as the reference was trained for)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the new layers and of every random draw (default: 0)")
    p.add_argument(
        "--fine-tune",
        action="store_true",
        help="train every weight, the reference's included (its embeddings then move); default: reference frozen",
    )
    p.add_argument(
        "--query-only",
        action="store_true",
        help="write the query datasets' embeddings only (default: reference and query rows together)",
    )
    g = p.add_argument_group("cost of the decoders")
    _add_decoder_cost(g, inherited=True)
    _add_offload(
        g,
        choices=["auto", "yes"],
        default=_map_default("offload"),
        what="the decoders of the reference and of the combined model",
    )
    _common(p)
    p.set_defaults(func=_map)


def _add_modules(sub) -> None:
    p = sub.add_parser(
        "modules",
        help="gene modules of the gene embeddings, their enrichment in gene sets, figures and tables",
        description=(
            "Cluster the gene embeddings into modules (Leiden on a kNN graph, with a UMAP: msg.tl.gene_modules)\n"
            "and, with --gmt, test every module for over-represented gene sets (msg.tl.enrichment). Writes into DIR:\n"
            "  modules.tsv          module of every (dataset, gene)\n"
            "  module_summary.tsv   size and make-up (datasets, omics, tissues, species) of every module\n"
            "  umap.png             UMAP of the genes coloured by module, dataset and omics\n"
            "  enrichment.tsv       with --gmt: every (module, gene set) pair with overlap, p-value and FDR\n"
            "  enrichment.png       with --gmt: the top enriched gene sets per module\n"
            "  gene_modules.h5ad    the embeddings with the modules (obs['leiden']) and the UMAP"
        ),
        epilog=f"example:\n  {PROG} modules model/{EMBEDDINGS_FILE} --gmt h.all.v2023.1.Hs.symbols.gmt -o modules",
        formatter_class=_Formatter,
    )
    p.add_argument("input", metavar="GENES.h5ad", help=f"gene embeddings written by `{PROG} train`")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    p.add_argument("--gmt", default=None, metavar="FILE", help="gene sets in GMT format (MSigDB, Enrichr, GO)")
    g = p.add_argument_group("modules")
    g.add_argument(
        "--resolution",
        type=_positive_float,
        default=1.0,
        help="Leiden resolution; higher gives more, smaller modules (default: %(default)s)",
    )
    g.add_argument(
        "--n-neighbors",
        type=_positive_int,
        default=15,
        metavar="K",
        help="neighbours of each gene in the kNN graph (default: %(default)s)",
    )
    g.add_argument("--use-rep", default=None, metavar="KEY", help="obsm key of the embedding (default: X_musegnn)")
    g.add_argument("--seed", type=int, default=0, help="seed of the kNN search, Leiden and UMAP (default: %(default)s)")
    g = p.add_argument_group("enrichment")
    g.add_argument(
        "--min-size",
        type=_positive_int,
        default=5,
        metavar="N",
        help="test only gene sets with at least N embedded genes (default: %(default)s)",
    )
    g.add_argument(
        "--max-size",
        type=_positive_int,
        default=500,
        metavar="N",
        help="test only gene sets with at most N embedded genes (default: %(default)s)",
    )
    g.add_argument(
        "--fdr",
        type=_probability,
        default=0.05,
        help="FDR threshold of the enrichment figure and of the count printed (default: %(default)s)",
    )
    _common(p)
    p.set_defaults(func=_modules)


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole pipeline on the embedded simulated datasets",
        description="Simulate six unpaired datasets with planted gene modules, build their graphs, train MuSe-GNN, "
        "find the modules and report how well the planted ones are recovered.",
    )
    p.add_argument("--out", default=None, metavar="DIR", help="folder to write the UMAP, embeddings and graphs to")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulation and of training (default: %(default)s)")
    p.add_argument("--n-top-genes", type=_positive_int, default=300, help="genes per graph (default: %(default)s)")
    p.add_argument("--epochs", type=_positive_int, default=40, help="training epochs (default: %(default)s)")
    p.add_argument("--resolution", type=_positive_float, default=1.0, help="Leiden resolution (default: %(default)s)")
    p.add_argument("--n-jobs", type=int, default=2, help="datasets processed in parallel (default: %(default)s)")
    _common(p)
    p.set_defaults(func=_demo)


def build_parser() -> argparse.ArgumentParser:
    """The ``musegnn-sc`` argument parser, one subparser per verb."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        formatter_class=_Formatter,
    )
    parser.add_argument("-v", "--verbose", dest="verbose_top", action="count", default=0, help="as -v of each verb")
    parser.add_argument("-q", "--quiet", dest="quiet_top", action="count", default=0, help="as -q of each verb")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_graphs(sub)
    _add_train(sub)
    _add_map(sub)
    _add_modules(sub)
    _add_demo(sub)

    from musegnn_sc.benchmark._cli import add_benchmark_parser

    _common(add_benchmark_parser(sub), writes=False)
    return parser


#: Errors the library raises for bad data, with messages that name the problem and the fix.
_DATA_ERRORS = (CLIError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, KeyError, ValueError)


def _one_line(err: BaseException) -> str:
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``musegnn-sc`` console script: parse ``argv`` and run the verb; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    verbosity = _verbosity(args)
    formatwarning = warnings.formatwarning
    warnings.formatwarning = _format_warning
    with _log_level(verbosity), warnings.catch_warnings():
        if verbosity == 0:
            warnings.simplefilter("ignore")  # -qq: errors only
        try:
            return args.func(args)
        except _DATA_ERRORS as err:
            if verbosity >= 3 and not isinstance(err, CLIError):
                raise
            print(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
        finally:
            warnings.formatwarning = formatwarning


if __name__ == "__main__":  # pragma: no cover
    # `python -m musegnn_sc.cli`: run the imported module's `main`, so that errors raised as
    # `musegnn_sc.cli.CLIError` elsewhere in the package are the class this `main` catches
    from musegnn_sc.cli import main as _main

    sys.exit(_main())
