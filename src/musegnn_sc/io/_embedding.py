"""Reading and writing gene embeddings in the formats people download (Gene2vec, GenePT, scGPT/Geneformer tables)."""

from __future__ import annotations

import gzip
import os
import pickle
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from musegnn_sc import _keys
from musegnn_sc import _logging as logg

Format = Literal["word2vec", "csv", "tsv", "parquet", "pickle", "npz", "h5ad"]
Duplicates = Literal["error", "first", "mean"]

#: File suffix -> format (a trailing ``.gz`` is allowed for the text formats).
SUFFIXES: dict[str, str] = {
    ".txt": "word2vec",
    ".w2v": "word2vec",
    ".vec": "word2vec",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".pkl": "pickle",
    ".pickle": "pickle",
    ".npz": "npz",
    ".h5ad": "h5ad",
}
FORMATS = ("word2vec", "csv", "tsv", "parquet", "pickle", "npz", "h5ad")
_GZIP_FORMATS = ("word2vec", "csv", "tsv")
#: Table columns recognised as the gene column (case-insensitive), in order of preference.
GENE_COLUMNS = ("gene", "genes", "symbol", "gene_symbol", "gene_name", "gene_id", "ensembl_id", "feature")


def _resolve_format(path: Path, fmt: str | None) -> tuple[str, bool]:
    """The format (given or from the suffix) and whether the file is gzip-compressed."""
    suffixes = [s.lower() for s in path.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    if fmt is not None:
        if fmt not in FORMATS:
            msg = f"Unknown `format` {fmt!r}; use one of {', '.join(map(repr, FORMATS))}."
            raise ValueError(msg)
    else:
        suffix = suffixes[-2] if gz and len(suffixes) >= 2 else (suffixes[-1] if suffixes and not gz else "")
        fmt = SUFFIXES.get(suffix)
        if fmt is None:
            known = ", ".join(sorted(SUFFIXES))
            msg = (
                f"Cannot tell the format of {str(path)!r} from its suffix {''.join(path.suffixes) or '(none)'!r}. "
                f"Known suffixes: {known} (plus '.gz' for text formats); or pass `format=` "
                f"({', '.join(map(repr, FORMATS))})."
            )
            raise ValueError(msg)
    if gz and fmt not in _GZIP_FORMATS:
        msg = f"{str(path)!r}: gzip compression is supported for {', '.join(_GZIP_FORMATS)} files only, not {fmt}."
        raise ValueError(msg)
    return fmt, gz


def _open_text(path: Path, gz: bool, mode: str = "rt"):
    return gzip.open(path, mode, encoding="utf-8") if gz else path.open(mode[0], encoding="utf-8")


# --------------------------------------------------------------------------------------------------------------------
# readers: each returns (genes, vectors) exactly as stored, checked later by _finish
# --------------------------------------------------------------------------------------------------------------------
def _to_float(rows: list[list[str]], linenos: list[int], path: Path) -> np.ndarray:
    try:
        return np.asarray(rows, dtype=np.float64)
    except ValueError:
        for tokens, lineno in zip(rows, linenos, strict=True):
            for tok in tokens:
                try:
                    float(tok)
                except ValueError:
                    msg = f"{path}:{lineno}: value {tok!r} is not a number; every field after the gene must be numeric."
                    raise ValueError(msg) from None
        raise


def _read_word2vec(path: Path, gz: bool) -> tuple[list[str], np.ndarray]:
    genes: list[str] = []
    rows: list[list[str]] = []
    linenos: list[int] = []
    header: tuple[int, int] | None = None
    width = None
    with _open_text(path, gz) as fh:
        for lineno, line in enumerate(fh, start=1):
            tokens = line.split()
            if not tokens:
                continue
            if header is None and not genes and len(tokens) == 2 and all(t.isdigit() for t in tokens):
                header = (int(tokens[0]), int(tokens[1]))
                continue
            if len(tokens) < 2:
                msg = f"{path}:{lineno}: gene {tokens[0]!r} has no values (expected `GENE v1 ... vd`)."
                raise ValueError(msg)
            if width is None:
                width = len(tokens) - 1
            elif len(tokens) - 1 != width:
                msg = (
                    f"{path}:{lineno}: gene {tokens[0]!r} has {len(tokens) - 1} values, the first gene had {width}: "
                    "ragged vectors (a gene name with spaces, or a truncated line)."
                )
                raise ValueError(msg)
            genes.append(tokens[0])
            rows.append(tokens[1:])
            linenos.append(lineno)
    if header is not None and genes:
        n, d = header
        if d != width:
            msg = f"{path}: the header says {d} dimensions, the vectors have {width}."
            raise ValueError(msg)
        if n != len(genes):
            msg = f"{path}: the header says {n} genes, the file holds {len(genes)} (truncated or concatenated file?)."
            raise ValueError(msg)
    return genes, _to_float(rows, linenos, path) if rows else np.zeros((0, 0))


def _is_number(text) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _from_table(df: pd.DataFrame, path: Path, gene_column: str | None) -> tuple[list[str], np.ndarray]:
    """Genes and vectors of a gene x dimension table: gene in a named column, else the index / first column."""
    if df.shape[0] == 0:
        return [], np.zeros((0, 0))
    lower = {str(c).lower(): c for c in df.columns}
    if gene_column is not None:
        if gene_column in df.columns:
            col = gene_column
        elif gene_column == df.index.name:
            df = df.reset_index()
            col = gene_column
        else:
            msg = f"{path}: no column {gene_column!r} (columns: {list(map(str, df.columns[:8]))} ...)."
            raise KeyError(msg)
    else:
        col = next((lower[c] for c in GENE_COLUMNS if c in lower), None)
        if col is None and not isinstance(df.index, pd.RangeIndex):
            df = df.reset_index()
            col = df.columns[0]
        if col is None:
            first = df.columns[0]
            if pd.api.types.is_numeric_dtype(df[first]):
                msg = (
                    f"{path}: cannot find the gene column (no column named {', '.join(GENE_COLUMNS)}, and the first "
                    "column is numeric). Pass `gene_column=`."
                )
                raise ValueError(msg)
            col = first
    genes = df[col].astype(str).tolist()
    values = df.drop(columns=[col])
    bad = [c for c in values.columns if not pd.api.types.is_numeric_dtype(values[c])]
    if bad:
        c = bad[0]
        non = values[c][pd.to_numeric(values[c], errors="coerce").isna() & values[c].notna()]
        example = f" (e.g. {non.iloc[0]!r} for gene {genes[non.index[0]] if len(non) else '?'!r})" if len(non) else ""
        msg = f"{path}: column {c!r} is not numeric{example}; every column but the gene column must hold numbers."
        raise ValueError(msg)
    if values.shape[1] == 0:
        msg = f"{path}: the table has a gene column {col!r} but no value columns."
        raise ValueError(msg)
    return genes, values.to_numpy(dtype=np.float64)


def _read_table(path: Path, fmt: str, gz: bool, gene_column: str | None) -> tuple[list[str], np.ndarray]:
    if fmt == "parquet":
        df = pd.read_parquet(path)
        return _from_table(df, path, gene_column)
    sep = "," if fmt == "csv" else "\t"
    compression = "gzip" if gz else None
    try:
        df = pd.read_csv(path, sep=sep, compression=compression)
    except pd.errors.EmptyDataError:
        return [], np.zeros((0, 0))
    # A header of floats (not dimension numbers such as 0, 1, 2) is the first gene's vector: no header line.
    names = [str(c) for c in df.columns[1:]]
    if names and all(_is_number(c) for c in names) and not all(c.lstrip("-").isdigit() for c in names):
        df = pd.read_csv(path, sep=sep, compression=compression, header=None)
    return _from_table(df, path, gene_column)


def _read_pickle(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open("rb") as fh:
        obj = pickle.load(fh)  # documented: read pickles only from sources you trust
    if isinstance(obj, pd.DataFrame):
        return _from_table(obj, path, None)
    if not isinstance(obj, Mapping):
        msg = f"{path}: the pickle holds a {type(obj).__name__}; expected a dict gene -> vector (GenePT's layout)."
        raise TypeError(msg)
    genes = [str(g) for g in obj]
    rows = []
    width = None
    for gene, vec in obj.items():
        arr = np.asarray(vec)
        if arr.ndim != 1:
            msg = f"{path}: the vector of gene {gene!r} has shape {arr.shape}; expected a 1-d vector."
            raise ValueError(msg)
        if width is None:
            width = arr.size
        elif arr.size != width:
            msg = f"{path}: gene {gene!r} has {arr.size} values, the first gene had {width}: ragged vectors."
            raise ValueError(msg)
        try:
            rows.append(arr.astype(np.float64))
        except (TypeError, ValueError):
            msg = f"{path}: the vector of gene {gene!r} holds non-numeric values."
            raise ValueError(msg) from None
    return genes, np.vstack(rows) if rows else np.zeros((0, 0))


def _read_npz(path: Path) -> tuple[list[str], np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if "genes" in arrays and "vectors" in arrays:
        genes, vectors = arrays["genes"], arrays["vectors"]
    else:
        names = [k for k, a in arrays.items() if a.ndim == 1 and a.dtype.kind in "US"]
        mats = [k for k, a in arrays.items() if a.ndim == 2 and a.dtype.kind in "fiu"]
        if len(names) != 1 or len(mats) != 1:
            msg = (
                f"{path}: expected arrays 'genes' (names) and 'vectors' (genes x dimensions), as "
                f"`msg.io.write_gene_embedding` writes; found {sorted(arrays)}."
            )
            raise ValueError(msg)
        genes, vectors = arrays[names[0]], arrays[mats[0]]
    if vectors.ndim != 2 or vectors.dtype.kind not in "fiu":
        msg = f"{path}: 'vectors' must be a 2-d numeric array, got shape {vectors.shape} and dtype {vectors.dtype}."
        raise ValueError(msg)
    if len(genes) != vectors.shape[0]:
        msg = f"{path}: {len(genes)} gene names but {vectors.shape[0]} vectors."
        raise ValueError(msg)
    return [str(g) for g in genes], vectors.astype(np.float64)


def _read_h5ad(path: Path, use_rep: str) -> tuple[list[str], np.ndarray]:
    import anndata as ad
    from scipy import sparse

    a = ad.read_h5ad(path)
    if use_rep in a.obsm:
        X = a.obsm[use_rep]
    else:
        X = a.X
    if X is None:
        msg = f"{path}: the AnnData has neither `obsm[{use_rep!r}]` nor `X`."
        raise ValueError(msg)
    X = X.toarray() if sparse.issparse(X) else np.asarray(X)
    genes = a.obs["gene"].astype(str).tolist() if "gene" in a.obs else a.obs_names.astype(str).tolist()
    return genes, X.astype(np.float64)


# --------------------------------------------------------------------------------------------------------------------
# public
# --------------------------------------------------------------------------------------------------------------------
def _dedup(genes: np.ndarray, X: np.ndarray, rule: str, path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    codes, uniques = pd.factorize(genes)
    n_dup = len(genes) - len(uniques)
    if n_dup == 0:
        return genes, X, 0
    dup = pd.Index(genes)[pd.Index(genes).duplicated()].unique()
    shown = ", ".join(map(repr, dup[:5])) + (" ..." if len(dup) > 5 else "")
    if rule == "error":
        msg = (
            f"{path}: {len(dup)} gene(s) occur more than once ({n_dup} extra rows: {shown}). Pass "
            "`duplicates='first'` to keep each gene's first vector or `duplicates='mean'` to average them."
        )
        raise ValueError(msg)
    if rule == "first":
        keep = np.sort(np.unique(codes, return_index=True)[1])
        out_genes, out_X = genes[keep], X[keep]
    elif rule == "mean":
        sums = np.zeros((len(uniques), X.shape[1]))
        np.add.at(sums, codes, X)
        out_genes, out_X = np.asarray(uniques, dtype=object), sums / np.bincount(codes)[:, None]
    else:
        msg = f"`duplicates` must be 'error', 'first' or 'mean', got {rule!r}."
        raise ValueError(msg)
    warnings.warn(
        f"{path}: {len(dup)} gene(s) occur more than once ({shown}); kept "
        + ("the first vector of each." if rule == "first" else "the mean vector of each."),
        UserWarning,
        stacklevel=3,
    )
    return out_genes, out_X, n_dup


def read_gene_embedding(
    path: str | os.PathLike,
    *,
    name: str,
    format: Format | None = None,
    gene_column: str | None = None,
    duplicates: Duplicates = "error",
    species: str = "unknown",
    key_added: str = _keys.EMBEDDING,
) -> AnnData:
    """Read an external gene embedding (Gene2vec, GenePT, scGPT, Geneformer, ...) into a gene-level AnnData.

    The result has the layout of :meth:`musegnn_sc.model.MuSeGNN.get_gene_embeddings` with a single "dataset"
    named ``name``, so :func:`~musegnn_sc.tl.gene_set_coherence`, :func:`~musegnn_sc.tl.predict_gene_function`,
    :func:`~musegnn_sc.tl.predict_gene_pairs`, :func:`~musegnn_sc.tl.similar_genes`,
    :func:`~musegnn_sc.tl.gene_modules`, :func:`~musegnn_sc.tl.evaluate` and the plots take it as they take a
    MuSe-GNN embedding.

    Formats (``format=None`` infers it from the suffix; ``.gz`` is allowed after the text suffixes):

    - ``'word2vec'`` (``.txt``, ``.w2v``, ``.vec``): Gene2vec's text format, an optional header line
      ``N dim`` then one line ``GENE v1 ... vd`` per gene, separated by spaces or tabs (a first line of exactly two
      non-negative integers is taken as the header, and must match the file);
    - ``'csv'`` / ``'tsv'`` (``.csv``; ``.tsv``, ``.tab``) and ``'parquet'`` (``.parquet``, ``.pq``): a gene x
      dimension table. The gene is the column named ``gene_column``, else the first column named one of ``gene``,
      ``genes``, ``symbol``, ``gene_symbol``, ``gene_name``, ``gene_id``, ``ensembl_id``, ``feature``
      (case-insensitive), else the (parquet) index or first column. A CSV/TSV whose header line is made of
      non-integer numbers has no header (the line is the first gene's vector);
    - ``'pickle'`` (``.pkl``, ``.pickle``): a pickled dict gene -> vector (GenePT's layout) or DataFrame;
    - ``'npz'``: arrays ``genes`` and ``vectors`` (as :func:`write_gene_embedding` writes them);
    - ``'h5ad'``: an AnnData, vectors from ``obsm[key_added]`` (else ``X``), genes from ``obs['gene']`` (else
      ``obs_names``).

    .. warning::
        Unpickling runs code chosen by whoever wrote the file: read pickles only from sources you trust, or convert
        them once, in a sandbox, to a table or ``.npz``.

    Parameters
    ----------
    path
        File to read.
    name
        Name of the embedding: the ``obs['dataset']`` value of every row and the prefix of ``obs_names``
        (``'<name>:<gene>'``), e.g. ``'gene2vec'``.
    format
        One of ``'word2vec'``, ``'csv'``, ``'tsv'``, ``'parquet'``, ``'pickle'``, ``'npz'``, ``'h5ad'``; ``None``
        infers it from the suffix.
    gene_column
        Column of a table holding the genes (tables only; default: see above).
    duplicates
        What to do with a gene listed more than once: ``'error'`` (default, the error lists them), ``'first'``
        (keep its first vector) or ``'mean'`` (average its vectors); either of the latter warns with the count.
    species
        Species of the genes, written to ``obs['species']`` (``'unknown'`` by default).
    key_added
        ``obsm`` key of the vectors. The default, ``'X_musegnn'``, is the key every tool of :mod:`musegnn_sc.tl`
        reads by default; with another key pass it as their ``use_rep=``.

    Returns
    -------
    AnnData with one row per gene, index ``'<name>:<gene>'`` and ``obs`` columns ``gene``, ``dataset`` (``name``),
    ``omics`` (``'external'``), ``tissue`` (``'unknown'``), ``species`` and ``is_common`` (``True``); the vectors
    (float32) in ``obsm[key_added]`` and ``X``; ``uns['gene_embedding']`` with ``name``, ``path``, ``format``,
    ``n_genes``, ``n_dims`` and ``n_duplicates``.

    Examples
    --------
    >>> import musegnn_sc as msg
    >>> g2v = msg.io.read_gene_embedding("gene2vec_dim_200_iter_9.txt", name="gene2vec")  # doctest: +SKIP
    >>> msg.tl.gene_set_coherence(g2v, "h.all.v2023.2.Hs.symbols.gmt")  # doctest: +SKIP
    """
    path = Path(path)
    if not isinstance(name, str) or not name:
        msg = f"`name` must be a non-empty string (e.g. 'gene2vec'), got {name!r}."
        raise ValueError(msg)
    fmt, gz = _resolve_format(path, format)
    if not path.is_file():
        msg = f"Gene embedding file {str(path)!r} does not exist."
        raise FileNotFoundError(msg)
    if gene_column is not None and fmt not in ("csv", "tsv", "parquet"):
        warnings.warn(f"`gene_column` is ignored for {fmt} files.", UserWarning, stacklevel=2)
    t0 = logg.start(f"reading {fmt} gene embedding {str(path)!r}")
    if path.stat().st_size == 0:
        msg = f"{path}: the file is empty."
        raise ValueError(msg)
    if fmt == "word2vec":
        genes, X = _read_word2vec(path, gz)
    elif fmt in ("csv", "tsv", "parquet"):
        genes, X = _read_table(path, fmt, gz, gene_column)
    elif fmt == "pickle":
        genes, X = _read_pickle(path)
    elif fmt == "npz":
        genes, X = _read_npz(path)
    else:
        genes, X = _read_h5ad(path, key_added)
    if len(genes) == 0 or X.size == 0:
        msg = f"{path}: no gene vector found (empty {fmt} file)."
        raise ValueError(msg)
    if not np.isfinite(X).all():
        r = int(np.flatnonzero(~np.isfinite(X).all(axis=1))[0])
        msg = f"{path}: gene {genes[r]!r} has missing or infinite values; every vector must be complete and finite."
        raise ValueError(msg)
    genes_arr = np.asarray(genes, dtype=object)
    empty = [k for k, g in enumerate(genes_arr) if not str(g).strip() or str(g).lower() == "nan"]
    if empty:
        msg = f"{path}: {len(empty)} row(s) have an empty gene name (first at row {empty[0]})."
        raise ValueError(msg)
    genes_arr, X, n_dup = _dedup(genes_arr, X, duplicates, path)
    X = X.astype(np.float32)
    gdata = embedding_anndata(genes_arr.astype(str), X, name=name, species=species, key_added=key_added)
    gdata.uns["gene_embedding"] = {
        "name": name,
        "path": str(path),
        "format": fmt,
        "n_genes": int(X.shape[0]),
        "n_dims": int(X.shape[1]),
        "n_duplicates": int(n_dup),
    }
    logg.finish(f"{X.shape[0]} genes x {X.shape[1]} dimensions", t0)
    return gdata


def embedding_anndata(
    genes: np.ndarray, X: np.ndarray, *, name: str, species: str = "unknown", key_added: str = _keys.EMBEDDING
) -> AnnData:
    """A gene-level AnnData (one "dataset" ``name``) around given vectors, in the layout of ``get_gene_embeddings``."""
    genes = np.asarray(genes).astype(str)
    obs = pd.DataFrame(
        {
            "gene": genes,
            "dataset": pd.Categorical([name] * len(genes)),
            "omics": pd.Categorical(["external"] * len(genes)),
            "tissue": pd.Categorical(["unknown"] * len(genes)),
            "species": pd.Categorical([str(species)] * len(genes)),
            "is_common": np.ones(len(genes), dtype=bool),
        },
        index=pd.Index([f"{name}:{g}" for g in genes]),
    )
    var = pd.DataFrame(index=[f"{name}_{k}" for k in range(X.shape[1])])
    gdata = AnnData(X=np.array(X, dtype=np.float32), obs=obs, var=var)
    gdata.obsm[key_added] = np.array(X, dtype=np.float32)
    return gdata


def _per_gene(gdata: AnnData, use_rep: str) -> tuple[np.ndarray, np.ndarray]:
    """Genes and one vector per gene: the rows as they are when genes are unique, else :func:`aggregate_genes`."""
    from musegnn_sc.tl._genes import _gene_column, aggregate_genes

    if use_rep not in gdata.obsm:
        avail = ", ".join(repr(k) for k in gdata.obsm) or "none"
        msg = f"`gdata.obsm[{use_rep!r}]` is missing (obsm keys: {avail}); pass the embedding's key as `use_rep=`."
        raise KeyError(msg)
    genes = _gene_column(gdata)
    if pd.Index(genes).is_unique:
        return genes, np.asarray(gdata.obsm[use_rep])
    agg = aggregate_genes(gdata, use_rep=use_rep)
    return agg.obs_names.to_numpy().astype(str), np.asarray(agg.obsm[use_rep])


def write_gene_embedding(
    gdata: AnnData,
    path: str | os.PathLike,
    *,
    format: Format | None = None,
    use_rep: str = _keys.EMBEDDING,
    overwrite: bool = False,
) -> None:
    """Write one vector per gene in a format other tools read (the formats of :func:`~musegnn_sc.io.read_gene_embedding`).

    A gene-level AnnData with several rows per gene (one per dataset, as :func:`~musegnn_sc.tl.train_musegnn`
    returns it) is first reduced to one vector per gene with :func:`~musegnn_sc.tl.aggregate_genes` (the mean of the
    gene's unit-length rows); with one row per gene the vectors are written as they are. The file is written to a
    temporary file beside ``path`` and renamed into place, so an interrupted write leaves no partial file.

    Layouts: ``'word2vec'`` a header ``N dim`` then ``GENE v1 ... vd`` lines (space-separated); ``'csv'``/``'tsv'``/
    ``'parquet'`` a table with a ``gene`` column then columns ``0 ... d-1``; ``'pickle'`` a dict gene ->
    :class:`numpy.ndarray` (GenePT's layout); ``'npz'`` arrays ``genes`` and ``vectors``; ``'h5ad'`` the per-gene
    AnnData (``obs['gene']``, vectors in ``obsm[use_rep]`` and ``X``). Text values keep float32 precision exactly.

    Parameters
    ----------
    gdata
        Gene-level AnnData (``obs['gene']``, else ``obs_names``, and the vectors in ``obsm[use_rep]``).
    path
        File to write; a ``.gz`` suffix compresses the text formats.
    format
        Format (see :func:`~musegnn_sc.io.read_gene_embedding`); ``None`` infers it from the suffix.
    use_rep
        ``gdata.obsm`` key of the vectors.
    overwrite
        Replace ``path`` if it exists (otherwise an existing file is an error).

    Returns
    -------
    ``None``; the file is written.

    Examples
    --------
    >>> import musegnn_sc as msg
    >>> gdata = msg.datasets.toy_gdata()
    >>> msg.io.write_gene_embedding(gdata, "toy_embedding.txt")  # doctest: +SKIP
    >>> msg.io.read_gene_embedding("toy_embedding.txt", name="toy").n_obs  # doctest: +SKIP
    180
    """
    path = Path(path)
    fmt, gz = _resolve_format(path, format)
    if path.exists() and not overwrite:
        msg = f"{str(path)!r} already exists. Pass `overwrite=True` to replace it, or choose another path."
        raise FileExistsError(msg)
    if path.is_dir():
        msg = f"{str(path)!r} is a directory; pass a file path."
        raise IsADirectoryError(msg)
    if not path.parent.is_dir():
        msg = f"The directory {str(path.parent)!r} does not exist; create it first."
        raise FileNotFoundError(msg)
    genes, X = _per_gene(gdata, use_rep)
    X = np.asarray(X)
    if X.dtype.kind not in "fc":
        X = X.astype(np.float32)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        msg = f"`gdata.obsm[{use_rep!r}]` has shape {X.shape}; nothing to write."
        raise ValueError(msg)
    if not np.isfinite(X).all():
        msg = f"`gdata.obsm[{use_rep!r}]` contains NaN or infinite values; they cannot be written."
        raise ValueError(msg)
    if fmt == "word2vec":
        spaced = [g for g in genes if any(c.isspace() for c in g) or not g]
        if spaced:
            msg = f"{len(spaced)} gene name(s) are empty or contain whitespace ({spaced[0]!r}); word2vec text cannot hold them."
            raise ValueError(msg)
    t0 = logg.start(f"writing {len(genes)} gene vectors to {str(path)!r} ({fmt})")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        _write(tmp_path, fmt, gz, genes, X, use_rep)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    logg.finish(f"wrote {str(path)!r}", t0)


def _write(tmp: Path, fmt: str, gz: bool, genes: np.ndarray, X: np.ndarray, use_rep: str) -> None:
    precision = "%.9g" if X.dtype.itemsize <= 4 else "%.17g"
    if fmt == "word2vec":
        with _open_text(tmp, gz, "wt") as fh:
            fh.write(f"{X.shape[0]} {X.shape[1]}\n")
            for g, row in zip(genes, X, strict=True):
                fh.write(g + " " + " ".join(precision % v for v in row) + "\n")
        return
    table = pd.DataFrame(X, columns=[str(k) for k in range(X.shape[1])])
    table.insert(0, "gene", genes)
    if fmt in ("csv", "tsv"):
        table.to_csv(
            tmp,
            sep="," if fmt == "csv" else "\t",
            index=False,
            float_format=precision,
            compression="gzip" if gz else None,
        )
    elif fmt == "parquet":
        table.to_parquet(tmp, index=False)
    elif fmt == "pickle":
        with tmp.open("wb") as fh:
            pickle.dump({g: np.array(row) for g, row in zip(genes, X, strict=True)}, fh, protocol=4)
    elif fmt == "npz":
        with tmp.open("wb") as fh:
            np.savez(fh, genes=np.asarray(genes, dtype=str), vectors=X)
    else:
        out = AnnData(
            X=X.copy(),
            obs=pd.DataFrame({"gene": genes}, index=pd.Index(genes)),
            var=pd.DataFrame(index=[f"{use_rep}_{k}" for k in range(X.shape[1])]),
        )
        out.obsm[use_rep] = X
        out.write_h5ad(tmp)
