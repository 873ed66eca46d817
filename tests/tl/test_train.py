import logging

import numpy as np
import pytest

import musegnn_sc as msg
from musegnn_sc.tl._train import train_musegnn


@pytest.fixture
def _one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.usefixtures("_one_thread")
def test_train_musegnn_builds_missing_graphs_and_writes_each_modality(caplog):
    mdata = msg.datasets.toy_mudata(include_mouse=False, n_rna=2, n_cells=120, n_genes=200)
    msg.pp.build_coexpression_graph(mdata.mod["rna_heart_1"], n_top_genes=100)
    logger = logging.getLogger("musegnn_sc")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="musegnn_sc"):
            gdata, model = train_musegnn(
                mdata, max_epochs=3, graph_kwargs={"n_top_genes": 100}, progress_bar=False, return_model=True
            )
    finally:
        logger.removeHandler(caplog.handler)
    built = [r.getMessage() for r in caplog.records if "building the co-expression graph" in r.getMessage()]
    assert len(built) == len(mdata.mod) - 1 and "rna_heart_1" not in " ".join(built)
    assert all("coexpression" in a.uns for a in mdata.mod.values())
    assert gdata.n_obs == 100 * len(mdata.mod)
    assert set(gdata.obs["omics"]) == {"rna", "atac", "spatial"}
    assert len(model.history) == 3
    for name, adata in mdata.mod.items():
        emb = adata.varm["X_musegnn"]
        mask = adata.var["coexpression_gene"].to_numpy()
        assert emb.shape == (adata.n_vars, 32)
        assert not emb[~mask].any()
        rows = gdata[gdata.obs["dataset"] == name]
        np.testing.assert_array_equal(emb[mask], rows.obsm["X_musegnn"])
        assert list(adata.var_names[mask]) == list(rows.obs["gene"])


def test_train_musegnn_rejects_unknown_modalities():
    mdata = msg.datasets.toy_mudata(include_mouse=False, include_atac=False, include_spatial=False, n_rna=1, n_cells=20)
    with pytest.raises(KeyError, match="not in the MuData"):
        train_musegnn(mdata, mods=["protein"])
