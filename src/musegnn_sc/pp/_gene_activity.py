"""Gene activity from scATAC-seq peak counts: the counts of the peaks overlapping each gene's regulatory window.

Every coordinate is handled in the BED convention (0-based start, end excluded). Overlaps of all peaks with all
windows are found at once (sort + binary search on a genome-wide coordinate), and the counts are one sparse product
``X @ M`` with ``M`` the peak x gene incidence matrix.
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from musegnn_sc import _logging
from musegnn_sc._keys import GENE_ACTIVITY, OMICS, SPECIES, TISSUE
from musegnn_sc._validate import check_counts, check_shape, get_matrix

# Accepted column names (compared case-insensitively), in order of preference.
_CHROM_COLS = ("chrom", "chr", "seqnames", "chromosome", "seqname", "seqid")
_START_COLS = ("start", "chromstart")
_START_1BASED_COLS = ("start_1based",)
_END_COLS = ("end", "chromend")
_GENE_COLS = ("gene", "gene_name", "name", "gene_symbol", "symbol", "gene_id")
_STRAND_COLS = ("strand",)
# `chr1:100-600`, `chr1-100-600`, `chr1_100_600`; the greedy chromosome part keeps contig names such as
# `chr6_apd_hap1` whole.
_PEAK_NAME = r"^(?P<chrom>.+)[:_-](?P<start>\d+)[-_](?P<end>\d+)$"


def _find_column(columns: pd.Index, candidates: tuple[str, ...]) -> str | None:
    lower = {str(c).lower(): c for c in columns}
    for cand in candidates:
        if cand in lower:
            return lower[cand]
    return None


def _as_int(values: pd.Series, what: str) -> np.ndarray:
    num = pd.to_numeric(values, errors="coerce")
    if num.isna().any():
        bad = values[num.isna()].astype(str).unique()[:3]
        msg = f"{what} must be integer coordinates; found {', '.join(map(repr, bad))}."
        raise ValueError(msg)
    return num.to_numpy(dtype=np.int64)


def _peak_coordinates(atac: AnnData) -> pd.DataFrame:
    """Chromosome, start and end of every peak, from ``var`` columns or from the peak names."""
    var = atac.var
    chrom_col = _find_column(var.columns, _CHROM_COLS)
    start1_col = _find_column(var.columns, _START_1BASED_COLS)
    start_col = _find_column(var.columns, _START_COLS)
    end_col = _find_column(var.columns, _END_COLS)
    if chrom_col is not None and (start_col or start1_col) is not None and end_col is not None:
        if start1_col is not None:
            start = _as_int(var[start1_col], f"`atac.var[{start1_col!r}]`") - 1
        else:
            start = _as_int(var[start_col], f"`atac.var[{start_col!r}]`")
        end = _as_int(var[end_col], f"`atac.var[{end_col!r}]`")
        chrom = var[chrom_col].astype(str).to_numpy()
        source = f"`atac.var` columns {chrom_col!r}, {start1_col or start_col!r}, {end_col!r}"
    else:
        parts = pd.Series(atac.var_names.astype(str), dtype=object).str.extract(_PEAK_NAME)
        missing = parts["chrom"].isna().to_numpy()
        if missing.any():
            bad = ", ".join(repr(n) for n in atac.var_names[missing][:3])
            cols = ", ".join(map(repr, var.columns[:8])) or "none"
            msg = (
                f"Could not find peak coordinates: {int(missing.sum())} of {atac.n_vars} peak names (e.g. {bad}) "
                "are not of the form 'chr1:100-600', 'chr1-100-600' or 'chr1_100_600', and `atac.var` lacks a "
                f"chromosome column ({'/'.join(_CHROM_COLS)}) with start ({'/'.join(_START_COLS + _START_1BASED_COLS)}) "
                f"and end ({'/'.join(_END_COLS)}) columns (var columns: {cols}). Store them, e.g. "
                "`atac.var[['chrom', 'start', 'end']] = bed_df[['chrom', 'start', 'end']].to_numpy()` "
                "(BED convention: 0-based start), or name the peaks 'chrom:start-end'."
            )
            raise ValueError(msg)
        chrom = parts["chrom"].to_numpy(dtype=object).astype(str)
        start = parts["start"].to_numpy(dtype=np.int64)
        end = parts["end"].to_numpy(dtype=np.int64)
        source = "peak names"
    bad = end <= start
    if bad.any():
        msg = (
            f"{int(bad.sum())} peak(s) have end <= start in the {source} (e.g. {atac.var_names[bad][0]!r}). "
            "Peaks need start < end (BED convention: 0-based start, end excluded)."
        )
        raise ValueError(msg)
    return pd.DataFrame({"chrom": chrom, "start": start, "end": end})


def _open_text(path: Path):
    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path)


def _annotation_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] == ".gtf":
        return "gtf"
    if suffixes and suffixes[-1] in (".gff", ".gff3"):
        msg = f"{path} looks like a GFF3 file; convert it to GTF (e.g. with gffread) or pass a BED file or a DataFrame."
        raise ValueError(msg)
    if suffixes and suffixes[-1] == ".bed":
        return "bed"
    with _open_text(path) as fh:
        for line in fh:
            if line.startswith(("#", "track", "browser")) or not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            return "gtf" if len(fields) >= 9 and "gene_id" in fields[8] else "bed"
    msg = f"The annotation file {path} has no data lines."
    raise ValueError(msg)


def _n_header_lines(path: Path) -> int:
    """Leading comment, ``track`` and ``browser`` lines (a ``#`` later in a line is data, e.g. in a gene name)."""
    skip = 0
    with _open_text(path) as fh:
        for line in fh:
            if not line.startswith(("#", "track", "browser")):
                break
            skip += 1
    return skip


def _read_bed(path: Path) -> pd.DataFrame:
    # keep_default_na=False: gene names such as "NA" or "None" are names, not missing values.
    bed = pd.read_csv(
        path, sep="\t", header=None, skiprows=_n_header_lines(path), dtype={0: str, 3: str}, keep_default_na=False
    )
    if bed.shape[1] < 4:
        msg = (
            f"The BED file {path} has {bed.shape[1]} column(s); gene activity needs a 4th column with gene names "
            "(BED4: chrom, start, end, name; BED6 adds score and strand)."
        )
        raise ValueError(msg)
    out = pd.DataFrame(
        {
            "chrom": bed[0].astype(str),
            "start": _as_int(bed[1], f"Column 2 (start) of {path}"),
            "end": _as_int(bed[2], f"Column 3 (end) of {path}"),
            "gene": bed[3],
        }
    )
    if bed.shape[1] >= 6:
        out["strand"] = bed[5].astype(str)
    return out


def _read_gtf(path: Path, gene_key: str | None) -> pd.DataFrame:
    gtf = pd.read_csv(
        path,
        sep="\t",
        header=None,
        skiprows=_n_header_lines(path),
        usecols=[0, 2, 3, 4, 6, 8],
        dtype={0: str, 2: str, 6: str, 8: str},
        keep_default_na=False,
    )
    feature = gtf[2]
    # Union of a gene's transcripts when a GTF lists no gene records.
    for kind in ("gene", "transcript"):
        rows = gtf[feature == kind]
        if len(rows):
            break
    else:
        msg = f"The GTF file {path} has no 'gene' or 'transcript' records (column 3)."
        raise ValueError(msg)
    attrs = rows[8]
    if gene_key is not None:
        gene = attrs.str.extract(rf'{re.escape(gene_key)} "([^"]*)"', expand=False)
    else:
        gene = attrs.str.extract(r'gene_name "([^"]*)"', expand=False)
        gene = gene.fillna(attrs.str.extract(r'gene_id "([^"]*)"', expand=False))
    # GTF is 1-based with the end included.
    return pd.DataFrame(
        {
            "chrom": rows[0].astype(str),
            "start": _as_int(rows[3], f"Column 4 (start) of {path}") - 1,
            "end": _as_int(rows[4], f"Column 5 (end) of {path}"),
            "gene": gene,
            "strand": rows[6].astype(str),
        }
    )


def _read_annotation(annotation: pd.DataFrame | str | os.PathLike, gene_key: str | None) -> tuple[pd.DataFrame, str]:
    """Columns chrom, start, end (BED convention), gene, strand ('+' or '-'), and a description of the source."""
    if isinstance(annotation, pd.DataFrame):
        cols = annotation.columns
        chrom_col = _find_column(cols, _CHROM_COLS)
        start1_col = _find_column(cols, _START_1BASED_COLS)
        start_col = _find_column(cols, _START_COLS)
        end_col = _find_column(cols, _END_COLS)
        if gene_key is not None and gene_key not in cols:
            msg = f"`gene_key={gene_key!r}` is not a column of the annotation (columns: {', '.join(map(str, cols))})."
            raise KeyError(msg)
        gene_col = gene_key if gene_key is not None else _find_column(cols, _GENE_COLS)
        if None in (chrom_col, end_col, gene_col) or (start_col is None and start1_col is None):
            msg = (
                f"The annotation DataFrame needs chromosome ({'/'.join(_CHROM_COLS)}), start "
                f"({'/'.join(_START_COLS + _START_1BASED_COLS)}), end ({'/'.join(_END_COLS)}) and gene "
                f"({'/'.join(_GENE_COLS)}, or `gene_key=`) columns; it has {', '.join(map(str, cols))}."
            )
            raise ValueError(msg)
        if start1_col is not None:
            start = _as_int(annotation[start1_col], f"Annotation column {start1_col!r}") - 1
        else:
            start = _as_int(annotation[start_col], f"Annotation column {start_col!r}")
        ann = pd.DataFrame(
            {
                "chrom": annotation[chrom_col].astype(str).to_numpy(),
                "start": start,
                "end": _as_int(annotation[end_col], f"Annotation column {end_col!r}"),
                "gene": annotation[gene_col].to_numpy(),
            }
        )
        strand_col = _find_column(cols, _STRAND_COLS)
        if strand_col is not None:
            ann["strand"] = annotation[strand_col].astype(str).to_numpy()
        source = "DataFrame"
    else:
        path = Path(annotation)
        if not path.is_file():
            msg = f"Annotation file {str(path)!r} not found. Pass a BED or GTF path, or a DataFrame."
            raise FileNotFoundError(msg)
        if _annotation_format(path) == "gtf":
            ann = _read_gtf(path, gene_key)
        else:
            ann = _read_bed(path)
        source = str(path)
    if "strand" not in ann:
        ann["strand"] = "+"
    # Unstranded rows ('.', missing) are read as '+'.
    ann["strand"] = np.where(ann["strand"].to_numpy() == "-", "-", "+")
    ann = ann[ann["gene"].notna() & (ann["gene"].astype(str) != "")]
    ann = ann.assign(gene=ann["gene"].astype(str))
    bad = ann["end"].to_numpy() < ann["start"].to_numpy()
    if bad.any():
        first = ann[bad].iloc[0]
        msg = (
            f"{int(bad.sum())} annotation row(s) have end < start (e.g. {first['gene']} at {first['chrom']}:"
            f"{first['start']}-{first['end']}). Fix or drop them."
        )
        raise ValueError(msg)
    return ann.reset_index(drop=True), source


def _gene_windows(
    ann: pd.DataFrame, *, upstream: int, downstream: int, gene_body: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Start and end of each annotation row's window; upstream is towards lower coordinates on '+'."""
    start = ann["start"].to_numpy(dtype=np.int64)
    end = ann["end"].to_numpy(dtype=np.int64)
    plus = ann["strand"].to_numpy() == "+"
    if gene_body:
        w_start = np.where(plus, start - upstream, start - downstream)
        w_end = np.where(plus, end + downstream, end + upstream)
    else:
        # The TSS base itself, plus `upstream` bases before it and `downstream` bases after it.
        tss = np.where(plus, start, end - 1)
        w_start = np.where(plus, tss - upstream, tss - downstream)
        w_end = np.where(plus, tss + downstream + 1, tss + upstream + 1)
    return np.maximum(w_start, 0), w_end


def overlap_pairs(
    q_chrom: np.ndarray,
    q_start: np.ndarray,
    q_end: np.ndarray,
    r_chrom: np.ndarray,
    r_start: np.ndarray,
    r_end: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Every pair ``(i, j)`` of overlapping half-open intervals ``q_i`` and ``r_j`` on the same chromosome.

    Chromosomes are integer codes. Empty intervals overlap nothing. The cost is ``O((n_q + n_r) log n_r)`` plus
    the number of ``r`` intervals that start within one ``r``-length of each ``q``.
    """
    q_ok = q_end > q_start
    r_ok = r_end > r_start
    if not q_ok.any() or not r_ok.any():
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    q_idx, r_idx = np.flatnonzero(q_ok), np.flatnonzero(r_ok)
    # One genome-wide axis: chromosome c occupies [c * span, (c + 1) * span).
    span = int(max(q_end[q_idx].max(), r_end[r_idx].max())) + 1
    qs = q_chrom[q_idx].astype(np.int64) * span + q_start[q_idx]
    qe = q_chrom[q_idx].astype(np.int64) * span + q_end[q_idx]
    rs = r_chrom[r_idx].astype(np.int64) * span + r_start[r_idx]
    re_ = r_chrom[r_idx].astype(np.int64) * span + r_end[r_idx]
    order = np.argsort(rs, kind="stable")
    rs, re_ = rs[order], re_[order]
    max_len = int((re_ - rs).max())
    # Candidates start before the query ends and no earlier than one maximal r-length before it starts.
    lo = np.searchsorted(rs, qs - max_len, side="right")
    hi = np.searchsorted(rs, qe, side="left")
    n = np.maximum(hi - lo, 0)
    qi = np.repeat(np.arange(len(qs)), n)
    offset = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    rj = np.repeat(lo, n) + offset
    keep = re_[rj] > qs[qi]
    return q_idx[qi[keep]], r_idx[order[rj[keep]]]


def _chromosome_mismatch(peak_chroms: np.ndarray, ann_chroms: np.ndarray) -> str:
    def show(values):
        return ", ".join(repr(v) for v in values[:5])

    peak_set, ann_set = set(peak_chroms), set(ann_chroms)
    msg = (
        f"The annotation shares no chromosome name with the peaks: peaks have {show(peak_chroms)}"
        f"{' ...' if len(peak_chroms) > 5 else ''}, the annotation has {show(ann_chroms)}"
        f"{' ...' if len(ann_chroms) > 5 else ''}."
    )
    added = {"chr" + c for c in ann_set} & peak_set
    removed = {c[3:] for c in ann_set if c.startswith("chr")} & peak_set
    if added:
        msg += (
            f" Adding the 'chr' prefix to the annotation's chromosome names would match {len(added)} of them: load "
            "it as a DataFrame and rename, e.g. `ann['chrom'] = 'chr' + ann['chrom'].astype(str)`."
        )
    elif removed:
        msg += (
            f" Removing the 'chr' prefix from the annotation's chromosome names would match {len(removed)} of them: "
            "load it as a DataFrame and rename, e.g. `ann['chrom'] = ann['chrom'].str.removeprefix('chr')`."
        )
    else:
        msg += (
            " Check that both use the same naming ('chr1' vs '1', UCSC vs Ensembl) and the same genome assembly "
            "(e.g. hg19 vs hg38, human vs mouse)."
        )
    return msg


def gene_activity(
    atac: AnnData,
    annotation: pd.DataFrame | str | os.PathLike,
    *,
    upstream: int = 2000,
    downstream: int = 0,
    gene_body: bool = True,
    layer: str | None = None,
    gene_key: str | None = None,
    min_peaks: int = 1,
) -> AnnData:
    """Gene-activity counts from scATAC-seq peak counts.

    For each gene, sums per cell the counts of the peaks that overlap its window: by default the gene body plus
    ``upstream`` bases upstream of the TSS (muon's ``count_fragments_features`` and SnapATAC2's
    ``make_gene_matrix`` use the same window, on fragments). Strand-aware: upstream is towards lower coordinates on
    ``'+'`` and higher on ``'-'``; rows without strand are taken as ``'+'``. A gene with several annotation rows
    (several TSSs or transcripts) gets the union of their windows, so each peak counts once per gene; a peak
    overlapping several genes counts for each of them.

    Parameters
    ----------
    atac
        Cells x peaks with raw fragment or read counts. Peak coordinates come from ``var`` columns (chromosome:
        ``chrom``/``chr``/``seqnames``/``chromosome``; start: ``start``/``chromStart`` (0-based) or
        ``start_1based``; end: ``end``/``chromEnd``) or from peak names such as ``chr1:100-600``,
        ``chr1-100-600`` or ``chr1_100_600`` (read as 0-based start, end excluded, as Cell Ranger ATAC writes).
    annotation
        Gene coordinates: a BED file (BED4 or BED6: chrom, start, end, gene name, score, strand; e.g. CellOracle's
        TSS files), a GTF file (``gene`` records, or ``transcript`` records if it has none; name from the
        ``gene_name`` attribute, else ``gene_id``), or a DataFrame with chromosome, start, end (0-based, or a
        ``start_1based`` column), gene name (``gene``/``gene_name``/``name``/...) and optional ``strand`` columns.
    upstream
        Bases added upstream of the TSS.
    downstream
        Bases added downstream of the gene end (of the TSS if ``gene_body=False``).
    gene_body
        Include the gene body; ``False`` keeps the TSS base with ``upstream`` and ``downstream`` bases around it.
    layer
        Layer of ``atac`` holding the raw peak counts; ``None`` uses ``atac.X``.
    gene_key
        Annotation column (DataFrame) or GTF attribute holding gene names; ``None`` picks one as described above.
    min_peaks
        Genes whose window overlaps fewer peaks are dropped (the number is logged at INFO level); ``0`` keeps every
        annotated gene, with zero counts where no peak overlaps.

    Returns
    -------
    A new AnnData, cells x genes (``atac`` is not modified), with the summed counts in ``X`` (CSR, the dtype of the
    input counts), ``obs``/``obsm`` copied from ``atac``, ``var`` columns ``chrom``, ``start``, ``end`` (the window;
    for a gene with several rows, the span of its windows on one chromosome, the first with peaks), ``n_windows``
    (annotation rows) and ``n_peaks`` (peaks in the union of the windows), ``uns['gene_activity']['params']``, and ``uns['omics'] = 'atac'`` (plus ``tissue`` and
    ``species`` when ``atac.uns`` has them). Genes are in the order of their first annotation row.

    Examples
    --------
    >>> import musegnn_sc as msg
    >>> peaks, annotation = msg.datasets.toy_atac_peaks()
    >>> genes = msg.pp.gene_activity(peaks, annotation)
    >>> genes.shape
    (300, 150)
    """
    for name, value in (("upstream", upstream), ("downstream", downstream), ("min_peaks", min_peaks)):
        if int(value) != value or value < 0:
            msg = f"`{name}` must be a non-negative integer, got {value!r}."
            raise ValueError(msg)
    check_shape(atac, what="scATAC peak dataset", min_obs=1, purpose="compute gene activity")
    X = get_matrix(atac, layer)
    check_counts(X, layer=layer, what="raw peak counts")
    t0 = _logging.start(f"computing gene activity of {atac.n_obs} cells from {atac.n_vars} peaks")

    peaks = _peak_coordinates(atac)
    ann, source = _read_annotation(annotation, gene_key)
    if len(ann) == 0:
        msg = "The annotation has no rows with a gene name."
        raise ValueError(msg)
    peak_chroms = pd.unique(peaks["chrom"].to_numpy())
    ann_chroms = pd.unique(ann["chrom"].to_numpy())
    if not set(peak_chroms) & set(ann_chroms):
        raise ValueError(_chromosome_mismatch(peak_chroms, ann_chroms))

    w_start, w_end = _gene_windows(ann, upstream=int(upstream), downstream=int(downstream), gene_body=gene_body)
    chroms = pd.Index(pd.unique(np.concatenate([peak_chroms, ann_chroms])))
    gene_codes, genes = pd.factorize(ann["gene"], sort=False)
    w_chrom = chroms.get_indexer(ann["chrom"].to_numpy())
    w_idx, p_idx = overlap_pairs(
        w_chrom,
        w_start,
        w_end,
        chroms.get_indexer(peaks["chrom"].to_numpy()),
        peaks["start"].to_numpy(),
        peaks["end"].to_numpy(),
    )
    incidence = sparse.csr_matrix(
        (np.ones(len(p_idx), dtype=np.int64), (p_idx, gene_codes[w_idx])), shape=(atac.n_vars, len(genes))
    )
    incidence.sum_duplicates()
    incidence.data[:] = 1
    n_peaks = np.asarray(incidence.sum(axis=0)).ravel()
    keep = np.flatnonzero(n_peaks >= min_peaks)
    if len(keep) == 0:
        msg = (
            f"No gene window overlaps at least {min_peaks} peak(s) ({len(genes)} genes, {atac.n_vars} peaks). "
            "Check that peaks and annotation use the same genome assembly, or widen the windows with `upstream=`."
        )
        raise ValueError(msg)
    n_dropped = len(genes) - len(keep)
    if n_dropped:
        _logging.logger.info(
            "    dropped %d of %d genes whose window overlaps fewer than %d peak(s)", n_dropped, len(genes), min_peaks
        )

    Xc = sparse.csr_matrix(X) if not sparse.issparse(X) else X.tocsr()
    dtype = Xc.dtype if np.issubdtype(Xc.dtype, np.integer) else np.float32
    M = incidence[:, keep].astype(dtype)
    counts = sparse.csr_matrix(Xc.astype(dtype, copy=False) @ M)
    counts.sort_indices()

    # A gene's coordinates in var: its windows on one chromosome (the first one with peaks, for genes also
    # annotated on alternative haplotype contigs).
    no_peaks = ~np.isin(w_chrom, chroms.get_indexer(peak_chroms))
    first = np.lexsort((no_peaks, gene_codes))
    main = w_chrom[first[np.searchsorted(gene_codes[first], np.arange(len(genes)))]]
    on_main = w_chrom == main[gene_codes]
    g_start = np.full(len(genes), np.iinfo(np.int64).max)
    g_end = np.zeros(len(genes), dtype=np.int64)
    np.minimum.at(g_start, gene_codes[on_main], w_start[on_main])
    np.maximum.at(g_end, gene_codes[on_main], w_end[on_main])
    n_windows = np.bincount(gene_codes, minlength=len(genes))
    var = pd.DataFrame(
        {
            "chrom": np.asarray(chroms)[main[keep]],
            "start": g_start[keep],
            "end": g_end[keep],
            "n_windows": n_windows[keep],
            "n_peaks": n_peaks[keep].astype(np.int64),
        },
        index=pd.Index(np.asarray(genes)[keep].astype(str)),
    )
    out = AnnData(X=counts, obs=atac.obs.copy(), var=var)
    for key, value in atac.obsm.items():
        out.obsm[key] = value.copy()
    params = {
        "annotation": source,
        "upstream": int(upstream),
        "downstream": int(downstream),
        "gene_body": bool(gene_body),
        "min_peaks": int(min_peaks),
        "n_peaks": int(atac.n_vars),
    }
    if layer is not None:
        params["layer"] = layer
    if gene_key is not None:
        params["gene_key"] = gene_key
    out.uns[GENE_ACTIVITY] = {"params": params}
    out.uns[OMICS] = "atac"
    for key in (TISSUE, SPECIES):
        if key in atac.uns:
            out.uns[key] = atac.uns[key]
    _logging.finish(f"{out.n_vars} genes, {len(np.unique(p_idx))} of {atac.n_vars} peaks in a window", t0)
    return out
