import warnings

import mudata as md
import numpy as np
import pytest

import musegnn_sc as msg


@pytest.fixture
def _one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _mudata(mods):
    with md.set_options(pull_on_update=False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="var_names are not unique")
        return md.MuData({k: v.copy() for k, v in mods.items()})


@pytest.fixture(scope="module")
def reference():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    full = msg.datasets.toy_mudata(include_mouse=False, include_spatial=False, n_rna=3, n_cells=120, n_genes=200)
    ref_md = _mudata({m: full.mod[m] for m in ("rna_heart_1", "rna_lung_1", "atac_heart_1")})
    _, model = msg.tl.train_musegnn(
        ref_md,
        max_epochs=3,
        graph_kwargs={"n_top_genes": 100},
        sim_reduction="mean",
        lr_encoder=1e-3,
        progress_bar=False,
        return_model=True,
    )
    torch.set_num_threads(n)
    return full, model


@pytest.mark.usefixtures("_one_thread")
def test_map_to_reference_builds_the_query_graph_trains_and_writes_varm(reference):
    full, ref = reference
    before = ref.get_gene_embeddings()
    query = _mudata({"rna_heart_2": full.mod["rna_heart_2"]})
    gdata, model = msg.tl.map_to_reference(
        query, ref, graph_kwargs={"n_top_genes": 100}, progress_bar=False, return_model=True
    )
    # the reference's options and epochs are reused
    assert len(model.history) == 3
    assert model.train_params_["sim_reduction"] == "mean"
    assert model.train_params_["lr_encoder"] == 1e-3
    assert gdata.obs["reference"].sum() == before.n_obs
    np.testing.assert_array_equal(gdata[gdata.obs["reference"].to_numpy()].obsm["X_musegnn"], before.obsm["X_musegnn"])
    adata = query.mod["rna_heart_2"]
    mask = adata.var["coexpression_gene"].to_numpy()
    assert mask.sum() == 100
    emb = adata.varm["X_musegnn"]
    assert emb.shape == (adata.n_vars, 32) and not emb[~mask].any()
    rows = gdata[(gdata.obs["dataset"] == "rna_heart_2").to_numpy()]
    np.testing.assert_array_equal(emb[mask], rows.obsm["X_musegnn"])
    assert query.uns["musegnn_setup"]["mods"] == ["rna_heart_2"]
    only = msg.tl.map_to_reference(query, ref, max_epochs=1, include_reference=False, progress_bar=False)
    assert set(only.obs["dataset"]) == {"rna_heart_2"}


@pytest.mark.usefixtures("_one_thread")
def test_map_to_reference_writes_nothing_when_a_query_modality_fails(reference):
    full, ref = reference
    bad = full.mod["rna_heart_2"].copy()
    bad.X = bad.X.toarray()
    bad.X[0, 0] = np.nan
    query = _mudata({"rna_q1": full.mod["rna_heart_2"], "rna_q2": bad})
    with pytest.raises(ValueError, match="'rna_q2'"):
        msg.tl.map_to_reference(query, ref, graph_kwargs={"n_top_genes": 100}, progress_bar=False)
    for a in query.mod.values():
        assert "coexpression" not in a.uns and "X_musegnn" not in a.varm and "coexpression_gene" not in a.var
    assert "musegnn_setup" not in query.uns
    # a query named as a reference dataset: the graph is built, but nothing is written either
    clash = _mudata({"rna_heart_1": full.mod["rna_heart_2"]})
    with pytest.raises(ValueError, match="name of a reference dataset"):
        msg.tl.map_to_reference(clash, ref, graph_kwargs={"n_top_genes": 100}, progress_bar=False)
    assert "coexpression" not in clash.mod["rna_heart_1"].uns and "musegnn_setup" not in clash.uns


@pytest.mark.usefixtures("_one_thread")
def test_map_to_reference_warns_about_ignored_graph_kwargs_and_takes_a_directory(reference, tmp_path):
    full, ref = reference
    query = _mudata({"rna_heart_2": full.mod["rna_heart_2"]})
    msg.pp.build_coexpression_graph(query.mod["rna_heart_2"], n_top_genes=100)
    ref.save(tmp_path / "ref")
    with pytest.warns(UserWarning, match="`graph_kwargs` is ignored"):
        gdata = msg.tl.map_to_reference(
            query, tmp_path / "ref", graph_kwargs={"n_top_genes": 50}, max_epochs=1, progress_bar=False
        )
    assert (gdata.obs["dataset"] == "rna_heart_2").sum() == 100
