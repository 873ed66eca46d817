from __future__ import annotations

import mudata as md
import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from scipy.spatial import cKDTree

from musegnn_sc._keys import OMICS, SPATIAL, SPECIES, TISSUE
from musegnn_sc.datasets._simulate import NO_MODULE, TRUTH_KEY, toy_atac_peaks, toy_mudata

EXPECTED = {
    "rna_heart_1": ("rna", "heart", "human"),
    "rna_heart_2": ("rna", "heart", "human"),
    "rna_lung_1": ("rna", "lung", "human"),
    "rna_heart_mouse": ("rna", "heart", "mouse"),
    "atac_heart_1": ("atac", "heart", "human"),
    "spatial_brain_1": ("spatial", "brain", "human"),
}


@pytest.fixture(scope="module")
def mdata():
    return toy_mudata()


def _log_normalised(adata) -> np.ndarray:
    X = adata.X.toarray().astype(np.float64)
    depth = X.sum(axis=1, keepdims=True)
    return np.log1p(X / depth * np.median(depth))


def _module_correlations(adata) -> tuple[float, float, float]:
    """Mean Pearson correlation of gene pairs: same module, different modules, involving a background gene."""
    C = np.corrcoef(_log_normalised(adata).T)
    module = adata.var["module"].astype(str).to_numpy()
    iu = np.triu_indices_from(C, k=1)
    same = (module[:, None] == module[None, :])[iu]
    background = ((module[:, None] == NO_MODULE) | (module[None, :] == NO_MODULE))[iu]
    c = C[iu]
    return c[same & ~background].mean(), c[~same & ~background].mean(), c[background].mean()


def _morans_i(Y: np.ndarray, coords: np.ndarray, k: int = 6) -> np.ndarray:
    """Moran's I of each column of Y on a row-standardised kNN graph."""
    _, nn = cKDTree(coords).query(coords, k=k + 1)
    Z = Y - Y.mean(axis=0)
    return (Z * Z[nn[:, 1:]].mean(axis=1)).sum(axis=0) / (Z**2).sum(axis=0)


def _assert_mudata_equal(a, b):
    assert list(a.mod) == list(b.mod)
    for name in a.mod:
        x, y = a[name], b[name]
        assert (x.X != y.X).nnz == 0
        pd.testing.assert_frame_equal(x.var, y.var)
        pd.testing.assert_index_equal(x.obs_names, y.obs_names)
        assert x.uns == y.uns
        assert x.obsm.keys() == y.obsm.keys()
        for key in x.obsm:
            np.testing.assert_array_equal(x.obsm[key], y.obsm[key])
    for key in ("genes", "modules", "orthologs"):
        pd.testing.assert_frame_equal(a.uns[TRUTH_KEY][key], b.uns[TRUTH_KEY][key])
    assert a.uns[TRUTH_KEY]["params"] == b.uns[TRUTH_KEY]["params"]


def test_deterministic_under_seed(mdata):
    _assert_mudata_equal(mdata, toy_mudata(seed=0))
    other = toy_mudata(seed=1)
    assert (other["rna_heart_1"].X != mdata["rna_heart_1"].X).nnz > 0
    assert not other["rna_heart_1"].var_names.equals(mdata["rna_heart_1"].var_names)


def test_modalities_and_metadata(mdata):
    assert list(mdata.mod) == list(EXPECTED)
    assert mdata.axis == 1
    for name, (omics, tissue, species) in EXPECTED.items():
        adata = mdata[name]
        assert adata.shape == (400, 500)
        assert (adata.uns[OMICS], adata.uns[TISSUE], adata.uns[SPECIES]) == (omics, tissue, species)
        assert adata.obs_names.is_unique and adata.var_names.is_unique
        assert all(n.startswith(name + "_") for n in adata.obs_names)
        assert isinstance(adata.var["module"].dtype, pd.CategoricalDtype)
        assert (SPATIAL in adata.obsm) == (omics == "spatial")
        assert ("spatial_pattern" in adata.var) == (omics == "spatial")
    # Unpaired: no cell in two datasets.
    assert mdata.obs_names.is_unique and mdata.n_obs == 400 * len(EXPECTED)
    coords = mdata["spatial_brain_1"].obsm[SPATIAL]
    assert coords.shape == (400, 2) and np.isfinite(coords).all()
    assert len(np.unique(coords, axis=0)) == 400


def test_gene_names_by_species(mdata):
    for name, (_, _, species) in EXPECTED.items():
        names = mdata[name].var_names
        if species == "human":
            assert names.str.fullmatch(r"GENE\d{4}").all()
        else:
            assert names.str.fullmatch(r"(Gene|Gm)\d{4}").all()
            assert names.str.startswith("Gm").sum() > 0
    orthologs = mdata.uns[TRUTH_KEY]["orthologs"]
    assert (orthologs["mouse"] == "Gene" + orthologs["human"].str[4:]).all()
    mouse = mdata["rna_heart_mouse"].var_names
    mouse_orthologous = mouse[mouse.str.startswith("Gene")]
    assert mouse_orthologous.isin(orthologs["mouse"]).all()
    mapped = set(orthologs.set_index("mouse").loc[mouse_orthologous, "human"])
    human_genes = set().union(*(mdata[n].var_names for n in EXPECTED if n != "rna_heart_mouse"))
    assert mapped <= human_genes | set(orthologs["human"])
    # Some human genes have no mouse orthologue.
    assert human_genes - set(orthologs["human"])
    # Genes shared by all datasets, by some, and specific to one.
    human = [set(mdata[n].var_names) for n in EXPECTED if n != "rna_heart_mouse"]
    common = set.intersection(*human)
    assert 0 < len(common) < 500
    assert any(len(h - set.union(*(o for o in human if o is not h))) > 0 for h in human)


def test_counts_are_raw_and_depth_varies(mdata):
    for name, adata in mdata.mod.items():
        X = adata.X
        assert sparse.isspmatrix_csr(X) and X.dtype == np.float32
        assert (X.data >= 0).all() and np.array_equal(X.data, np.round(X.data))
        depth = np.asarray(X.sum(axis=1)).ravel()
        assert depth.min() > 0, name
        assert depth.std() / depth.mean() > 0.3, name
        assert np.quantile(depth, 0.95) / np.quantile(depth, 0.05) > 3, name
        assert (np.asarray(X.sum(axis=0)).ravel() > 0).all(), name
        # Overdispersed: moment estimates of the NB overdispersion (var - mean) / mean**2 of well-expressed genes
        # are clearly positive (Poisson: 0).
        dense = X.toarray()
        mean, var = dense.mean(axis=0), dense.var(axis=0)
        expressed = mean > 0.5
        assert expressed.sum() > 50, name
        phi = (var[expressed] - mean[expressed]) / mean[expressed] ** 2
        assert np.median(phi) > 0.2 and np.mean(phi > 0) > 0.9, name
    atac, rna = mdata["atac_heart_1"].X, mdata["rna_heart_1"].X
    assert atac.nnz < rna.nnz and atac.sum() < rna.sum()


def test_planted_modules_are_correlated(mdata):
    for name, adata in mdata.mod.items():
        within, between, background = _module_correlations(adata)
        floor = 0.08 if name.startswith("atac") else 0.15
        assert within > floor, name
        assert within > 3 * abs(between) and within > 3 * abs(background), name
        assert abs(background) < 0.02, name


def test_module_roles(mdata):
    modules = mdata.uns[TRUTH_KEY]["modules"].set_index("module")
    assert list(modules["kind"]) == ["shared", "shared", "shared", "partial", "specific", "specific"]
    assert modules.loc["M5", "datasets"] == "rna_lung_1"
    assert modules.loc["M6", "datasets"] == "spatial_brain_1"
    heart = [n for n, (_, tissue, _) in EXPECTED.items() if tissue == "heart"]
    assert modules.loc["M4", "datasets"] == ",".join(heart)
    orthologs = mdata.uns[TRUTH_KEY]["orthologs"].set_index("mouse")["human"]

    def genes_of(name, module):
        var = mdata[name].var
        genes = var.index[var["module"] == module]
        if mdata[name].uns[SPECIES] == "mouse":
            genes = orthologs.loc[genes]
        return set(genes)

    for module, row in modules.iterrows():
        members = row["datasets"].split(",")
        sets = [genes_of(n, module) for n in members]
        # Same genes (through orthologues) in every dataset where the module is planted, absent elsewhere.
        assert all(s == sets[0] and len(s) == row["n_genes"] for s in sets), module
        assert all(not genes_of(n, module) for n in EXPECTED if n not in members), module
    # The partial module's genes are present, but not co-expressed, outside the heart.
    lung = mdata["rna_lung_1"]
    m4 = genes_of("rna_heart_1", "M4")
    assert m4 <= set(lung.var_names)
    cols = lung.var_names.isin(m4)
    C = np.corrcoef(_log_normalised(lung)[:, cols].T)
    assert abs(C[np.triu_indices_from(C, 1)].mean()) < 0.03
    # Dataset-specific module genes exist only in their dataset.
    m5 = genes_of("rna_lung_1", "M5")
    assert all(not m5 & set(mdata[n].var_names) for n in EXPECTED if n != "rna_lung_1")


def test_truth_table_matches_var(mdata):
    genes = mdata.uns[TRUTH_KEY]["genes"]
    kinds = mdata.uns[TRUTH_KEY]["modules"].set_index("module")["kind"]
    for name, adata in mdata.mod.items():
        rows = genes[genes["dataset"] == name].set_index("gene")
        assert list(rows.index) == list(adata.var_names)
        assert (rows["module"].astype(str).to_numpy() == adata.var["module"].astype(str).to_numpy()).all()
        expected_kind = rows["module"].astype(str).map(lambda m: kinds.get(m, NO_MODULE))
        assert (rows["module_kind"].astype(str) == expected_kind).all()
        if "spatial_pattern" in adata.var:
            assert (rows["spatial_pattern"].to_numpy() == adata.var["spatial_pattern"].to_numpy()).all()


def test_spatial_genes_are_autocorrelated(mdata):
    adata = mdata["spatial_brain_1"]
    I = _morans_i(_log_normalised(adata), adata.obsm[SPATIAL])
    patterned = adata.var["spatial_pattern"].to_numpy()
    assert set(adata.var["module"][patterned]) == {"M1", "M6"}
    assert I[patterned].mean() > 0.2
    assert abs(I[~patterned].mean()) < 0.02
    assert np.median(I[patterned]) > np.quantile(I[~patterned], 0.99)
    # Co-expressed but spatially random modules are not spatial.
    random_modules = (~patterned) & (adata.var["module"] != NO_MODULE).to_numpy()
    assert I[random_modules].mean() < 0.05


def test_h5mu_round_trip(mdata, tmp_path):
    path = tmp_path / "toy.h5mu"
    with md.set_options(pull_on_update=False):
        mdata.write(path)
        back = md.read_h5mu(path)
    _assert_mudata_equal(mdata, back)


def test_dataset_selection():
    small = toy_mudata(n_cells=50, n_genes=200, n_modules=3, module_size=10, n_rna=2, include_atac=False, seed=3)
    assert list(small.mod) == ["rna_heart_1", "rna_heart_2", "rna_heart_mouse", "spatial_brain_1"]
    kinds = small.uns[TRUTH_KEY]["modules"]["kind"].tolist()
    # No lung dataset: no lung-specific module; the heart datasets still get their own module.
    assert kinds == ["shared", "partial", "specific"]
    modules = small.uns[TRUTH_KEY]["modules"].set_index("module")
    assert modules.loc["M2", "datasets"] == "rna_heart_1,rna_heart_2,rna_heart_mouse"
    assert all(a.shape == (50, 200) for a in small.mod.values())
    only_rna = toy_mudata(
        n_cells=30,
        n_genes=100,
        n_modules=2,
        module_size=5,
        n_rna=1,
        include_mouse=False,
        include_atac=False,
        include_spatial=False,
    )
    assert list(only_rna.mod) == ["rna_heart_1"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_modules": 3}, "n_modules"),
        ({"n_genes": 90}, "n_genes"),
        ({"n_cells": 1}, "n_cells"),
        ({"n_rna": 0, "include_mouse": False, "include_atac": False, "include_spatial": False}, "No dataset"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        toy_mudata(**kwargs)


def test_toy_atac_peaks():
    peaks, annotation = toy_atac_peaks(seed=2)
    again, annotation2 = toy_atac_peaks(seed=2)
    assert (peaks.X != again.X).nnz == 0
    pd.testing.assert_frame_equal(annotation, annotation2)
    assert peaks.var_names.str.fullmatch(r"chr\d:\d+-\d+").all()
    assert (peaks.var["end"] - peaks.var["start"] == 500).all()
    assert np.array_equal(peaks.X.data, np.round(peaks.X.data))
    # Every gene has a promoter peak; some peaks lie between genes; some genes have two annotation rows.
    assert set(peaks.var["gene"]) - {NO_MODULE} == set(annotation["gene"])
    assert (peaks.var["gene"] == NO_MODULE).sum() > 0
    assert annotation["gene"].duplicated().sum() > 0
