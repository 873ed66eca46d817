from __future__ import annotations

import argparse
import warnings

import numpy as np
import pytest

from musegnn_sc.benchmark import BASELINES, run_baseline
from musegnn_sc.tl._evaluate import edge_auc

TORCH_METHODS = ("gae", "vgae", "mae", "wsmae")


@pytest.fixture(scope="module")
def mdata():
    import musegnn_sc as msg
    from musegnn_sc.pp import build_coexpression_graphs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = msg.datasets.toy_mudata(
            n_cells=150,
            n_genes=120,
            n_modules=3,
            module_size=12,
            n_rna=2,
            include_mouse=False,
            include_atac=False,
            seed=0,
        )
        build_coexpression_graphs(m, n_top_genes=80, n_features=32)
    return m


def _check_layout(g, mdata, method, seed, width=32):
    names = list(mdata.mod)
    assert list(g.obs["dataset"].cat.categories) == names
    for col in ("gene", "dataset", "omics", "tissue", "species", "is_common"):
        assert col in g.obs
    assert (g.obs_names == g.obs["dataset"].astype(str) + ":" + g.obs["gene"].astype(str)).all()
    assert g.obsm["X_musegnn"].shape == (g.n_obs, width)
    assert g.obsm["X_musegnn"].dtype == np.float32
    assert np.isfinite(g.obsm["X_musegnn"]).all()
    n_nodes = sum(int(a.var["coexpression_gene"].sum()) for a in mdata.mod.values())
    assert g.n_obs == n_nodes
    common = set.intersection(*(set(a.var_names[a.var["coexpression_gene"]]) for a in mdata.mod.values()))
    assert set(g.obs.loc[g.obs["is_common"], "gene"]) == common
    assert g.uns["baseline"]["method"] == method
    assert g.uns["baseline"]["seed"] == seed


def test_pca_layout_and_matches_sklearn(mdata):
    from sklearn.decomposition import PCA

    g = run_baseline(mdata, "pca", seed=0)
    _check_layout(g, mdata, "pca", 0)
    name = next(iter(mdata.mod))
    a = mdata.mod[name]
    mask = a.var["coexpression_gene"].to_numpy()
    F = np.asarray(a.varm["coexpression_features"], dtype=np.float64)[mask]
    F /= np.sqrt(np.mean(F**2))  # every method reads the features scaled to unit root mean square per dataset
    expected = PCA(n_components=min(32, F.shape[1])).fit_transform(F)
    got = g[g.obs["dataset"] == name].obsm["X_musegnn"][:, : expected.shape[1]]
    # Principal components are defined up to sign.
    for j in range(expected.shape[1]):
        assert min(np.abs(got[:, j] - expected[:, j]).max(), np.abs(got[:, j] + expected[:, j]).max()) < 1e-3


@pytest.mark.parametrize("method", TORCH_METHODS)
def test_neural_baselines_layout_seeds_and_learning(mdata, method):
    a = run_baseline(mdata, method, seed=1, epochs=20, n_threads=1)
    _check_layout(a, mdata, method, 1)
    b = run_baseline(mdata, method, seed=1, epochs=20, n_threads=1)
    c = run_baseline(mdata, method, seed=2, epochs=2, n_threads=1)
    np.testing.assert_array_equal(a.obsm["X_musegnn"], b.obsm["X_musegnn"])
    assert not np.allclose(a.obsm["X_musegnn"], c.obsm["X_musegnn"])
    loss = a.uns["baseline"]["loss"]
    assert len(loss) == 20
    assert loss[-1] < loss[0]  # every parameter group is stepped: the loss goes down


def test_gae_embedding_predicts_edges(mdata):
    g = run_baseline(mdata, "gae", seed=0, epochs=60, n_threads=1)
    for name, a in mdata.mod.items():
        mask = a.var["coexpression_gene"].to_numpy()
        A = a.varp["coexpression_connectivities"][mask][:, mask]
        Z = g[g.obs["dataset"] == name].obsm["X_musegnn"]
        assert edge_auc(Z, A, include_self_loops=False) > 0.75, name


def test_width_option(mdata):
    g = run_baseline(mdata, "mae", n_latent=8, epochs=2, key_added="X_mae", n_threads=1)
    assert g.obsm["X_mae"].shape[1] == 8
    assert "X_musegnn" not in g.obsm


def test_gene2vec_without_gensim_names_the_install_command(mdata, monkeypatch):
    import sys

    from musegnn_sc.benchmark._runner import method_available

    for name in ("gensim", "gensim.models"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import gensim` fail even where it is installed
    with pytest.raises(ImportError, match=r"pip install 'musegnn_sc\[benchmark\]'"):
        run_baseline(mdata, "gene2vec")
    ok, why = method_available("gene2vec")
    assert not ok and "musegnn_sc[benchmark]" in why


def test_gene2vec_layout(mdata):
    pytest.importorskip("gensim")
    g = run_baseline(mdata, "gene2vec", seed=0, epochs=2)
    _check_layout(g, mdata, "gene2vec", 0)


def test_errors(mdata):
    with pytest.raises(ValueError, match="choose one of"):
        run_baseline(mdata, "scbert")
    with pytest.raises(KeyError, match="build_coexpression_graphs"):
        run_baseline(mdata, "pca", graph_key="nothing")
    assert set(BASELINES) == {"pca", "gae", "vgae", "mae", "wsmae", "gene2vec"}


# ---------------------------------------------------------------------------------------------------------------------
# the runner and its command line
# ---------------------------------------------------------------------------------------------------------------------
def test_run_benchmark_writes_table_figure_and_reports_unavailable(mdata, tmp_path, monkeypatch):
    import pandas as pd

    from musegnn_sc.benchmark import _runner, run_benchmark

    # MuSe-GNN must be reported as unavailable, not replaced, when its training function is missing.
    monkeypatch.setattr(_runner, "_MUSEGNN_ENTRY_POINTS", (("musegnn_sc.tl", "no_such_function"),))
    lines = []
    res = run_benchmark(
        mdata,
        methods=["musegnn", "pca", "mae"],
        seeds=(0, 1),
        out_dir=tmp_path,
        method_options={"mae": {"epochs": 3, "n_threads": 1}},
        save_embeddings=True,
        progress=lines.append,
    )
    assert "musegnn" in res.skipped and "no_such_function" in res.skipped["musegnn"]
    assert any(line.startswith("[skip] musegnn") for line in lines)
    assert len(res.scores) == 4
    assert set(res.scores["method"]) == {"pca", "mae"}
    assert {"AUC", "ASW", "GC", "iLISI", "CGR", "NO", "avg_score", "avg_rank", "AUC_std"} <= set(res.summary.columns)
    for path in res.files.values():
        assert path.is_file() and path.stat().st_size > 0
    pd.testing.assert_frame_equal(pd.read_csv(res.files["scores"]), res.scores, check_dtype=False)
    md_table = res.files["markdown"].read_text()
    assert md_table.startswith("| method | AUC | ASW | GC | iLISI | CGR | NO | Avg Score | Avg Rank |")
    assert "musegnn (not run:" in md_table
    assert " ± " in md_table
    # A second call reuses the stored rows (nothing retrained) and adds only the missing seed.
    again = run_benchmark(
        mdata, methods=["pca"], seeds=(0, 1, 2), out_dir=tmp_path, save_embeddings=True, progress=lines.append
    )
    assert len(again.scores) == 3
    pd.testing.assert_frame_equal(
        again.scores[again.scores.seed < 2].reset_index(drop=True),
        res.scores[res.scores.method == "pca"].reset_index(drop=True),
        check_dtype=False,
    )
    assert any("pca seed 2" in line for line in lines)
    assert set(pd.read_csv(res.files["scores"])["method"]) == {"pca", "mae"}  # the mae rows are kept on disk
    saved = sorted(p.name for p in (tmp_path / "embeddings").iterdir())
    assert saved == ["mae_seed0.h5ad", "mae_seed1.h5ad", "pca_seed0.h5ad", "pca_seed1.h5ad", "pca_seed2.h5ad"]


def test_runner_rejects_unknown_methods(mdata):
    from musegnn_sc.benchmark import run_benchmark

    with pytest.raises(ValueError, match="Unknown method"):
        run_benchmark(mdata, methods=["scbert"], progress=None)


def test_benchmark_subcommand_parses():
    import argparse

    from musegnn_sc.benchmark._cli import add_benchmark_parser

    parser = argparse.ArgumentParser()
    add_benchmark_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["benchmark", "--methods", "pca", "gae", "--seeds", "0", "1", "--max-cells", "500"])
    assert args.methods == ["pca", "gae"]
    assert args.seeds == [0, 1]
    assert args.max_cells == 500
    assert args.collection == "shared"
    assert callable(args.func)


@pytest.mark.slow
def test_shared_collection_loads(shared_data):
    from musegnn_sc.benchmark import load_shared_collection

    m = load_shared_collection(shared_data, max_cells=300)
    assert list(m.mod) == [
        "rna_pbmc_kang_ctrl",
        "rna_pbmc_kang_stim",
        "rna_pbmc_10k",
        "rna_pbmc_5k",
        "spatial_lymph_node",
    ]
    assert all(a.n_obs <= 300 for a in m.mod.values())
    assert m.mod["spatial_lymph_node"].uns["omics"] == "spatial"
    assert "spatial" in m.mod["spatial_lymph_node"].obsm


def test_variants_run_a_method_with_other_options(mdata, monkeypatch):
    from musegnn_sc.benchmark import _runner, run_benchmark
    from musegnn_sc.benchmark._cli import parse_variant

    seen = []

    def fake_run(mdata, method, seed, options):
        seen.append((method, options.get(method, {})))
        return run_baseline(mdata, "pca", seed=seed)  # any valid embedding: only the call is checked

    monkeypatch.setattr(_runner, "_run_method", fake_run)
    res = run_benchmark(
        mdata,
        methods=["mae"],
        seeds=(0,),
        method_options={"mae": {"epochs": 3}},
        variants=dict([parse_variant("mae_wide=mae:width=64,epochs=2")]),
        progress=None,
    )
    assert seen == [("mae", {"epochs": 3}), ("mae", {"epochs": 2, "width": 64})]
    assert list(res.scores["method"]) == ["mae", "mae_wide"]
    with pytest.raises(ValueError, match="variant needs a new name"):
        run_benchmark(mdata, variants={"pca": ("pca", {})}, progress=None)
    with pytest.raises(argparse.ArgumentTypeError, match="NAME=METHOD:KEY=VALUE"):
        parse_variant("mae_wide:width=64")
