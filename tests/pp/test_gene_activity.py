from __future__ import annotations

import gzip
import time

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from musegnn_sc._keys import GENE_ACTIVITY, OMICS, SPECIES, TISSUE
from musegnn_sc.datasets._simulate import toy_atac_peaks
from musegnn_sc.pp._gene_activity import gene_activity, overlap_pairs

# Hand-made peaks (BED convention) around two genes on chr1:
#   GA '+' [10000, 12000): default window [8000, 12000)
#   GB '-' [20000, 25000): default window [20000, 27000) (upstream is to the right on '-')
PEAKS = [
    ("chr1", 7000, 7500),  # p0 far upstream of GA
    ("chr1", 7500, 8000),  # p1 ends where GA's window starts: no overlap (end excluded)
    ("chr1", 7800, 8001),  # p2 one base into GA's window
    ("chr1", 9000, 9500),  # p3 GA promoter
    ("chr1", 11900, 12100),  # p4 GA's last bases
    ("chr1", 12000, 12500),  # p5 just downstream of GA
    ("chr1", 19000, 19500),  # p6 downstream of GB ('-'); would be "upstream" if the strand were ignored
    ("chr1", 22000, 22500),  # p7 GB body
    ("chr1", 26000, 26500),  # p8 GB promoter ('-': above the gene end)
    ("chr2", 9000, 9500),  # p9 GA's promoter coordinates on another chromosome
]
GENES = pd.DataFrame(
    {
        "chrom": ["chr1", "chr1"],
        "start": [10000, 20000],
        "end": [12000, 25000],
        "gene": ["GA", "GB"],
        "strand": ["+", "-"],
    }
)


def _peaks(names: str = "colon", n_cells: int = 4, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 5, size=(n_cells, len(PEAKS))).astype(np.float32)
    chrom, start, end = map(np.array, zip(*PEAKS, strict=True))
    fmt = {"colon": "{}:{}-{}", "dash": "{}-{}-{}", "underscore": "{}_{}_{}"}[names]
    var = pd.DataFrame({"chrom": chrom, "start": start, "end": end}, index=[fmt.format(*p) for p in PEAKS])
    obs = pd.DataFrame({"cell_type": ["a", "b"] * (n_cells // 2)}, index=[f"cell{i}" for i in range(n_cells)])
    return ad.AnnData(X=sparse.csr_matrix(X), obs=obs, var=var)


def _expected(atac: ad.AnnData, members: dict[str, list[int]]) -> np.ndarray:
    X = atac.X.toarray()
    return np.column_stack([X[:, idx].sum(axis=1) for idx in members.values()])


def _check(result: ad.AnnData, atac: ad.AnnData, members: dict[str, list[int]]) -> None:
    assert list(result.var_names) == list(members)
    np.testing.assert_array_equal(result.X.toarray(), _expected(atac, members))
    assert list(result.var["n_peaks"]) == [len(v) for v in members.values()]


# Expected peak members per setting.
DEFAULT = {"GA": [2, 3, 4], "GB": [7, 8]}


def test_overlap_pairs_matches_brute_force():
    rng = np.random.default_rng(1)
    nq, nr = 300, 400
    q_chrom, r_chrom = rng.integers(0, 3, nq), rng.integers(0, 3, nr)
    q_start, r_start = rng.integers(0, 10_000, nq), rng.integers(0, 10_000, nr)
    q_end = q_start + rng.integers(0, 800, nq)  # includes empty intervals
    r_end = r_start + rng.integers(0, 300, nr)
    qi, rj = overlap_pairs(q_chrom, q_start, q_end, r_chrom, r_start, r_end)
    brute = (
        (q_chrom[:, None] == r_chrom[None, :])
        & (q_start[:, None] < r_end[None, :])
        & (r_start[None, :] < q_end[:, None])
        & (q_end > q_start)[:, None]
        & (r_end > r_start)[None, :]
    )
    assert len(qi) == brute.sum() > 0
    assert set(zip(qi.tolist(), rj.tolist(), strict=True)) == set(zip(*np.nonzero(brute), strict=True))


def test_known_overlaps_both_strands():
    atac = _peaks()
    _check(gene_activity(atac, GENES), atac, DEFAULT)


def test_windows_follow_the_options():
    atac = _peaks()
    # TSS windows: GA's TSS is 10000, GB's is 24999 (the last base of a '-' gene).
    _check(gene_activity(atac, GENES, gene_body=False), atac, {"GA": [2, 3], "GB": [8]})
    _check(gene_activity(atac, GENES, upstream=0), atac, {"GA": [4], "GB": [7]})
    _check(gene_activity(atac, GENES, downstream=1000), atac, {"GA": [2, 3, 4, 5], "GB": [6, 7, 8]})
    # TSS base only: no peak holds base 10000 or 24999.
    with pytest.raises(ValueError, match="No gene window overlaps"):
        gene_activity(atac, GENES, gene_body=False, upstream=0)


def test_unstranded_annotation_is_plus():
    atac = _peaks()
    _check(gene_activity(atac, GENES.drop(columns="strand")), atac, {"GA": [2, 3, 4], "GB": [6, 7]})
    _check(gene_activity(atac, GENES.assign(strand=".")), atac, {"GA": [2, 3, 4], "GB": [6, 7]})


def test_union_of_several_rows_counts_each_peak_once():
    atac = _peaks()
    extra = pd.DataFrame(
        {
            "chrom": ["chr1", "chr1", "chr1"],
            "start": [10500, 26600, 19200],
            "end": [12000, 26700, 19300],
            "gene": ["GA", "GB", "GC"],
            "strand": ["+", "+", "-"],
        }
    )
    # GA's second row (window [8500, 12000)) reaches peaks 3 and 4 again, GB's second row ('+', window
    # [24600, 26700)) peak 8 again: each counts once. GC ('-', window [19200, 21300)) holds peak 6.
    ann = pd.concat([GENES, extra], ignore_index=True)
    result = gene_activity(atac, ann)
    _check(result, atac, {"GA": [2, 3, 4], "GB": [7, 8], "GC": [6]})
    assert list(result.var["n_windows"]) == [2, 2, 1]
    # var spans a gene's windows.
    assert tuple(result.var.loc["GA", ["start", "end"]]) == (8000, 12000)
    assert tuple(result.var.loc["GB", ["start", "end"]]) == (20000, 27000)
    # With 1 kb downstream, GB's window [19000, 27000) reaches peak 6 too: a peak in two genes counts for both.
    _check(gene_activity(atac, ann, downstream=1000), atac, {"GA": [2, 3, 4, 5], "GB": [6, 7, 8], "GC": [6]})


@pytest.mark.parametrize("names", ["colon", "dash", "underscore"])
def test_coordinates_from_peak_names(names):
    atac = _peaks(names)
    atac.var = pd.DataFrame(index=atac.var_names)
    _check(gene_activity(atac, GENES), atac, DEFAULT)


def test_coordinate_column_names():
    atac = _peaks()
    reference = gene_activity(atac, GENES).X.toarray()
    renamed = atac.copy()
    renamed.var = atac.var.rename(columns={"chrom": "seqnames", "start": "chromStart", "end": "chromEnd"})
    np.testing.assert_array_equal(gene_activity(renamed, GENES).X.toarray(), reference)
    # 1-based starts (as from R/Bioconductor GRanges) are shifted to the BED convention.
    one_based = atac.copy()
    one_based.var = pd.DataFrame(
        {"chr": atac.var["chrom"], "start_1based": atac.var["start"] + 1, "end": atac.var["end"]}, index=atac.var_names
    )
    np.testing.assert_array_equal(gene_activity(one_based, GENES).X.toarray(), reference)
    # Names of alternative contigs keep their underscores.
    contig = ad.AnnData(
        X=sparse.csr_matrix(np.ones((2, 1), dtype=np.float32)), var=pd.DataFrame(index=["chr6_apd_hap1_9000_9500"])
    )
    ann = GENES.assign(chrom="chr6_apd_hap1")
    assert gene_activity(contig, ann).var_names.tolist() == ["GA"]


def test_annotation_dataframe_column_names():
    atac = _peaks()
    ann = GENES.rename(columns={"chrom": "Chromosome", "gene": "gene_name", "start": "chromStart"})
    _check(gene_activity(atac, ann), atac, DEFAULT)
    ann = GENES.rename(columns={"gene": "symbol"}).assign(gene_id=["ENSG1", "ENSG2"])
    assert gene_activity(atac, ann, gene_key="gene_id").var_names.tolist() == ["ENSG1", "ENSG2"]


def test_bed_files(tmp_path):
    atac = _peaks()
    bed6 = tmp_path / "genes.bed"
    GENES.assign(score=0)[["chrom", "start", "end", "gene", "score", "strand"]].to_csv(
        bed6, sep="\t", header=False, index=False
    )
    _check(gene_activity(atac, bed6), atac, DEFAULT)
    _check(gene_activity(atac, str(bed6)), atac, DEFAULT)
    # gzip and a track line
    gz = tmp_path / "genes.bed.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write('track name="genes"\n' + bed6.read_text())
    _check(gene_activity(atac, gz), atac, DEFAULT)
    # BED4: no strand, read as '+'
    bed4 = tmp_path / "genes4.txt"
    GENES[["chrom", "start", "end", "gene"]].to_csv(bed4, sep="\t", header=False, index=False)
    _check(gene_activity(atac, bed4), atac, {"GA": [2, 3, 4], "GB": [6, 7]})
    assert gene_activity(atac, bed4).uns[GENE_ACTIVITY]["params"]["annotation"] == str(bed4)
    # "NA" is a gene name, not a missing value; rows without a name are skipped.
    odd = tmp_path / "odd.bed"
    odd.write_text("chr1\t10000\t12000\tNA\t0\t+\nchr1\t20000\t25000\t\t0\t-\n")
    assert gene_activity(atac, odd).var_names.tolist() == ["NA"]


def test_gtf_file(tmp_path):
    atac = _peaks()
    # GTF is 1-based with the end included: the BED interval [10000, 12000) is 10001..12000.
    lines = [
        "#!genome-build test",
        'chr1\tsrc\tgene\t10001\t12000\t.\t+\t.\tgene_id "ENSG1"; gene_name "GA"; gene_type "protein_coding";',
        'chr1\tsrc\ttranscript\t10001\t12000\t.\t+\t.\tgene_id "ENSG1"; transcript_id "T1"; gene_name "GA";',
        'chr1\tsrc\texon\t10001\t10500\t.\t+\t.\tgene_id "ENSG1"; transcript_id "T1"; gene_name "GA";',
        'chr1\tsrc\tgene\t20001\t25000\t.\t-\t.\tgene_id "ENSG2"; gene_type "lncRNA";',
    ]
    gtf = tmp_path / "genes.gtf"
    gtf.write_text("\n".join(lines) + "\n")
    _check(gene_activity(atac, gtf), atac, {"GA": [2, 3, 4], "ENSG2": [7, 8]})
    by_id = gene_activity(atac, gtf, gene_key="gene_id")
    assert by_id.var_names.tolist() == ["ENSG1", "ENSG2"]
    # Without a recognised suffix the format is sniffed.
    sniffed = tmp_path / "genes.annotation"
    sniffed.write_text(gtf.read_text())
    assert gene_activity(atac, sniffed).var_names.tolist() == ["GA", "ENSG2"]


def test_output_and_input_unchanged(tmp_path):
    atac = _peaks()
    atac.uns[TISSUE], atac.uns[SPECIES] = "marrow", "human"
    atac.obsm["X_umap"] = np.arange(8.0).reshape(4, 2)
    before = atac.copy()
    result = gene_activity(atac, GENES)
    assert sparse.isspmatrix_csr(result.X) and result.X.dtype == np.float32
    pd.testing.assert_frame_equal(result.obs, atac.obs)
    np.testing.assert_array_equal(result.obsm["X_umap"], atac.obsm["X_umap"])
    assert result.uns[OMICS] == "atac" and result.uns[TISSUE] == "marrow" and result.uns[SPECIES] == "human"
    assert result.uns[GENE_ACTIVITY]["params"]["upstream"] == 2000
    assert list(result.var.columns) == ["chrom", "start", "end", "n_windows", "n_peaks"]
    # Input untouched.
    assert (atac.X != before.X).nnz == 0
    pd.testing.assert_frame_equal(atac.var, before.var)
    pd.testing.assert_frame_equal(atac.obs, before.obs)
    assert set(atac.uns) == set(before.uns)
    # Integer input keeps its dtype; the result survives an .h5ad round trip.
    atac_int = atac.copy()
    atac_int.X = atac.X.astype(np.int32)
    result_int = gene_activity(atac_int, GENES)
    assert result_int.X.dtype == np.int32
    path = tmp_path / "ga.h5ad"
    result_int.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert (back.X != result_int.X).nnz == 0
    assert back.uns[GENE_ACTIVITY]["params"] == result_int.uns[GENE_ACTIVITY]["params"]


def test_layer_and_dense_input():
    atac = _peaks()
    counts = atac.X.copy()
    atac.layers["counts"] = counts
    atac.X = atac.X.multiply(1 / 3).tocsr()
    with pytest.raises(ValueError, match="layer="):
        gene_activity(atac, GENES)
    result = gene_activity(atac, GENES, layer="counts")
    assert result.uns[GENE_ACTIVITY]["params"]["layer"] == "counts"
    dense = _peaks()
    dense.X = dense.X.toarray()
    np.testing.assert_array_equal(result.X.toarray(), gene_activity(dense, GENES).X.toarray())


def test_min_peaks(caplog):
    atac = _peaks()
    ann = pd.concat([GENES, pd.DataFrame({"chrom": ["chr3"], "start": [0], "end": [10], "gene": ["GZ"]})])
    with caplog.at_level("INFO", logger="musegnn_sc"):
        default = gene_activity(atac, ann)
    assert default.var_names.tolist() == ["GA", "GB"]
    assert "dropped 1 of 3 genes" in caplog.text
    all_genes = gene_activity(atac, ann, min_peaks=0)
    assert all_genes.var_names.tolist() == ["GA", "GB", "GZ"]
    assert all_genes[:, "GZ"].X.sum() == 0 and all_genes.var.loc["GZ", "n_peaks"] == 0
    assert gene_activity(atac, ann, min_peaks=3).var_names.tolist() == ["GA"]


def test_toy_peaks_recover_planted_genes():
    peaks, annotation = toy_atac_peaks(seed=4)
    result = gene_activity(peaks, annotation)
    assert result.n_vars == annotation["gene"].nunique()
    X = peaks.X.toarray()
    members = peaks.var["gene"].to_numpy()
    expected = np.column_stack([X[:, members == g].sum(axis=1) for g in result.var_names])
    np.testing.assert_array_equal(result.X.toarray(), expected)
    n_rows = annotation["gene"].value_counts()
    assert (result.var["n_windows"] == n_rows.loc[result.var_names].to_numpy()).all()


# ---------------------------------------------------------------- errors


def test_error_peaks_without_coordinates():
    atac = ad.AnnData(
        X=sparse.csr_matrix(np.ones((3, 2), dtype=np.float32)),
        var=pd.DataFrame({"score": [1, 2]}, index=["peak_a", "peak_b"]),
    )
    with pytest.raises(ValueError, match=r"(?s)peak coordinates.*'peak_a'.*chr1:100-600.*atac\.var\["):
        gene_activity(atac, GENES)
    half = _peaks()
    half.var = pd.DataFrame(index=[*half.var_names[:-1], "ATAC_feature"])
    with pytest.raises(ValueError, match=r"1 of 10 peak names.*'ATAC_feature'"):
        gene_activity(half, GENES)


@pytest.mark.parametrize(
    ("peak_chrom", "ann_chrom", "hint"),
    [
        ("chr1", "1", "Adding the 'chr' prefix"),
        ("1", "chr1", "Removing the 'chr' prefix"),
        ("chr1", "NC_000001.11", "same genome assembly"),
    ],
)
def test_error_no_shared_chromosome(peak_chrom, ann_chrom, hint):
    atac = _peaks()
    atac.var["chrom"] = atac.var["chrom"].str.replace("chr1", peak_chrom)
    atac.var.loc[atac.var["chrom"] == "chr2", "chrom"] = "chrX" if peak_chrom.startswith("chr") else "X"
    with pytest.raises(ValueError, match="shares no chromosome") as err:
        gene_activity(atac, GENES.assign(chrom=ann_chrom))
    assert hint in str(err.value)
    assert repr(peak_chrom) in str(err.value) and repr(ann_chrom) in str(err.value)


@pytest.mark.parametrize(
    ("values", "match"),
    [(0.5, "non-integer"), (-1.0, "negative"), (np.nan, "NaN")],
)
def test_error_not_counts(values, match):
    atac = _peaks()
    X = atac.X.toarray()
    X[0, 0] = values
    atac.X = sparse.csr_matrix(X)
    with pytest.raises(ValueError, match=match) as err:
        gene_activity(atac, GENES)
    assert "layer=" in str(err.value)


def test_error_empty():
    atac = _peaks()
    with pytest.raises(ValueError, match="empty"):
        gene_activity(atac[:0].copy(), GENES)
    with pytest.raises(ValueError, match="empty"):
        gene_activity(atac[:, :0].copy(), GENES)


def test_error_bad_annotation(tmp_path):
    atac = _peaks()
    with pytest.raises(ValueError, match="needs chromosome"):
        gene_activity(atac, GENES.drop(columns="gene"))
    with pytest.raises(KeyError, match="gene_key='symbol'"):
        gene_activity(atac, GENES, gene_key="symbol")
    bed3 = tmp_path / "three.bed"
    GENES[["chrom", "start", "end"]].to_csv(bed3, sep="\t", header=False, index=False)
    with pytest.raises(ValueError, match="4th column with gene names"):
        gene_activity(atac, bed3)
    with pytest.raises(FileNotFoundError, match="not found"):
        gene_activity(atac, tmp_path / "missing.bed")
    with pytest.raises(ValueError, match="end < start"):
        gene_activity(atac, GENES.assign(end=[9000, 25000]))
    with pytest.raises(ValueError, match="upstream"):
        gene_activity(atac, GENES, upstream=-1)


# ---------------------------------------------------------------- real data


def _brute_force_incidence(peaks: pd.DataFrame, bed: pd.DataFrame, genes: pd.Index, upstream: int) -> sparse.csr_matrix:
    """Peak x gene incidence by the documented window rule, checking every (peak, row) pair per chromosome."""
    plus = bed["strand"].to_numpy() != "-"
    w_start = np.maximum(np.where(plus, bed["start"] - upstream, bed["start"]), 0)
    w_end = np.where(plus, bed["end"], bed["end"] + upstream)
    gene_idx = genes.get_indexer(bed["gene"])
    M = np.zeros((len(peaks), len(genes)), dtype=bool)
    for chrom in set(peaks["chrom"]) & set(bed["chrom"]):
        p = np.flatnonzero(peaks["chrom"].to_numpy() == chrom)
        w = np.flatnonzero(bed["chrom"].to_numpy() == chrom)
        hit = (peaks["start"].to_numpy()[p, None] < w_end[None, w]) & (
            w_start[None, w] < peaks["end"].to_numpy()[p, None]
        )
        hit &= (w_end > w_start)[None, w]
        pi, wi = np.nonzero(hit)
        M[p[pi], gene_idx[w[wi]]] = True
    return sparse.csr_matrix(M)


def test_real_bone_marrow_atac(shared_data):
    path = shared_data / "atac" / "human_bonemarrow_scATAC_granja2019_epichaos_600cells_5000peaks.h5ad"
    bed_path = shared_data / "atac" / "annotation" / "celloracle_hg19_tss_info.bed"
    atac = ad.read_h5ad(path)
    before = atac.copy()
    t0 = time.perf_counter()
    result = gene_activity(atac, bed_path)
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0  # about 0.15 s on the 2-core development machine
    assert result.n_obs == atac.n_obs and result.n_vars > 100
    assert result.X.dtype == atac.X.dtype and np.issubdtype(result.X.dtype, np.integer)
    assert (np.asarray(result.X.sum(axis=0)).ravel() >= 0).all()

    # Independent incidence from the BED rows (var holds 1-based starts).
    bed = pd.read_csv(bed_path, sep="\t", header=None, names=["chrom", "start", "end", "gene", "score", "strand"])
    bed = bed[bed["gene"].notna()]  # a few rows have an empty name
    peaks = pd.DataFrame(
        {"chrom": atac.var["chrom"].astype(str), "start": atac.var["start_1based"] - 1, "end": atac.var["end"]}
    )
    genes = pd.Index(pd.unique(bed["gene"]))
    M = _brute_force_incidence(peaks, bed, genes, upstream=2000)
    n_per_gene = np.asarray(M.sum(axis=0)).ravel()
    kept = genes[n_per_gene > 0]
    assert result.var_names.tolist() == kept.tolist()
    np.testing.assert_array_equal(result.var["n_peaks"].to_numpy(), n_per_gene[n_per_gene > 0])
    expected = atac.X @ M[:, n_per_gene > 0].astype(atac.X.dtype)
    assert (result.X != expected).nnz == 0
    # Invariant: the total is the sum over peaks of the peak's counts times the number of genes it falls in.
    peak_totals = np.asarray(atac.X.sum(axis=0)).ravel()
    genes_per_peak = np.asarray(M.sum(axis=1)).ravel()
    assert result.X.sum() == (peak_totals * genes_per_peak).sum()
    # var holds each single-row gene's window by the documented rule.
    single = bed[~bed["gene"].duplicated(keep=False) & bed["gene"].isin(result.var_names)].set_index("gene")
    plus = single["strand"] != "-"
    window_start = np.where(plus, np.maximum(single["start"] - 2000, 0), single["start"])
    window_end = np.where(plus, single["end"], single["end"] + 2000)
    assert len(single) > 100
    np.testing.assert_array_equal(result.var.loc[single.index, "start"], window_start)
    np.testing.assert_array_equal(result.var.loc[single.index, "end"], window_end)
    assert (result.var["n_windows"] > 1).any()
    pd.testing.assert_frame_equal(result.obs, atac.obs)
    assert (atac.X != before.X).nnz == 0
    pd.testing.assert_frame_equal(atac.var, before.var)
