import logging

import lightning.pytorch as pl
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


# ---------------------------------------------------------------- all or nothing, nothing silent

FAST = {"progress_bar": False, "lr_encoder": 1e-3}


@pytest.fixture(scope="module")
def counts_mudata():
    """Four small count datasets (rna, rna, atac, spatial), no graphs."""
    return msg.datasets.toy_mudata(include_mouse=False, n_rna=2, n_cells=60, n_genes=120)


@pytest.fixture(scope="module")
def graphs_mudata(counts_mudata):
    """The same datasets with graphs of 40 genes."""
    mdata = counts_mudata.copy()
    msg.pp.build_coexpression_graphs(mdata, n_top_genes=40)
    return mdata


def _state(mdata):
    """Every key a call may write, and copies of the arrays under them."""
    out = {"mdata.uns": {k: repr(v) for k, v in mdata.uns.items()}}
    for m, a in mdata.mod.items():
        out[m] = {
            "uns": {k: repr(v) for k, v in a.uns.items()},
            "varp": {k: v.toarray().tobytes() for k, v in a.varp.items()},
            "varm": {k: np.asarray(v).tobytes() for k, v in a.varm.items()},
            "var": {c: a.var[c].to_numpy().tobytes() for c in a.var.columns},
        }
    return out


class _RaiseMidEpoch(pl.Callback):
    def __init__(self, epoch=0, batch=1, error=None):
        self.epoch, self.batch = epoch, batch
        self.error = RuntimeError("boom in the middle of an epoch") if error is None else error

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise self.error


def _break(adata, how):
    if how == "log-normalised":
        adata.X = adata.X.copy()
        adata.X.data = np.log1p(adata.X.data)
    elif how == "NaN":
        adata.X = adata.X.copy()
        adata.X.data[0] = np.nan
    elif how == "negative":
        adata.X = adata.X.copy()
        adata.X.data[0] = -1
    return adata


@pytest.mark.parametrize(
    ("how", "error", "match"),
    [
        ("log-normalised", ValueError, "non-integer"),
        ("NaN", ValueError, "NaN"),
        ("negative", ValueError, "negative"),
        ("empty", ValueError, "empty"),
    ],
)
def test_a_failing_third_modality_writes_nothing_and_is_named(counts_mudata, how, error, match):
    mdata = counts_mudata.copy()
    third = list(mdata.mod)[2]
    if how == "empty":
        mdata.mod[third] = mdata.mod[third][:0].copy()
    else:
        _break(mdata.mod[third], how)
    before = _state(mdata)
    with pytest.raises(error, match=match) as info:
        train_musegnn(mdata, max_epochs=1, graph_kwargs={"n_top_genes": 40}, **FAST)
    assert repr(third) in str(info.value)
    assert _state(mdata) == before


def test_a_missing_layer_and_a_broken_existing_graph_are_named_before_any_graph_is_built(counts_mudata, graphs_mudata):
    mdata = counts_mudata.copy()
    for name in list(mdata.mod)[:2]:
        mdata.mod[name].layers["counts"] = mdata.mod[name].X.copy()
    before = _state(mdata)
    with pytest.raises(KeyError, match="'atac_heart_1'.*Layer 'counts' not found"):
        train_musegnn(mdata, layer="counts", max_epochs=1, **FAST)
    assert _state(mdata) == before
    # graphs of the first two to build, the third's stored graph lacks its features: nothing is built
    mdata = graphs_mudata.copy()
    for name in list(mdata.mod)[:2]:
        del mdata.mod[name].uns["coexpression"]
    del mdata.mod["atac_heart_1"].varm["coexpression_features"]
    before = _state(mdata)
    with pytest.raises(KeyError, match="'atac_heart_1'.*coexpression_features"):
        train_musegnn(mdata, max_epochs=1, **FAST)
    assert _state(mdata) == before


def test_an_exception_in_training_leaves_the_mudata_as_it_was(graphs_mudata):
    mdata = graphs_mudata.copy()
    train_musegnn(mdata, max_epochs=1, **FAST)  # earlier results: embeddings and a setup to keep
    # one modality needs its graph again: the new graph must be taken back too
    del mdata.mod["rna_heart_2"].uns["coexpression"]
    before = _state(mdata)
    with pytest.raises(RuntimeError, match="boom") as info, pytest.warns(UserWarning, match="other values"):
        train_musegnn(
            mdata, max_epochs=3, callbacks=[_RaiseMidEpoch(epoch=1)], graph_kwargs={"n_top_genes": 30}, **FAST
        )
    assert mdata.mod["rna_heart_2"].var["coexpression_gene"].sum() == 40  # the 30-gene graph was taken back
    assert "last complete epoch (1 epoch(s)" in "\n".join(getattr(info.value, "__notes__", []))
    assert _state(mdata) == before
    # a key that did not exist before the call is removed again
    mdata = graphs_mudata.copy()
    before = _state(mdata)
    assert "musegnn_setup" not in mdata.uns
    with pytest.raises(RuntimeError, match="boom"):
        train_musegnn(mdata, max_epochs=2, callbacks=[_RaiseMidEpoch()], **FAST)
    assert _state(mdata) == before


def test_options_are_checked_before_anything_is_written(graphs_mudata):
    mdata = graphs_mudata.copy()
    del mdata.mod["rna_heart_1"].uns["coexpression"]  # a graph to build
    before = _state(mdata)
    with pytest.raises(TypeError, match="`max_epoch` -> `max_epochs`"):
        train_musegnn(mdata, max_epoch=3, **FAST)
    with pytest.raises(TypeError, match="`max_epochs` must be an integer"):
        train_musegnn(mdata, max_epochs=2.5, **FAST)
    with pytest.raises(TypeError, match="`lr_decoder` must be a number"):
        train_musegnn(mdata, max_epochs=1, lr_decoder="fast", progress_bar=False)
    with pytest.raises(ValueError, match="`decoder` must be one of"):
        train_musegnn(mdata, max_epochs=1, decoder="linear", **FAST)
    with pytest.raises(TypeError, match="pass `graph_key=`"):
        train_musegnn(mdata, max_epochs=1, graph_kwargs={"key_added": "g"}, **FAST)
    with pytest.raises(TypeError, match="does not take"):
        train_musegnn(mdata, max_epochs=1, graph_kwargs={"n_top_gene": 30}, **FAST)
    with pytest.raises(TypeError, match="got an AnnData.*MuData"):
        train_musegnn(mdata.mod["rna_heart_2"], max_epochs=1, **FAST)
    with pytest.raises(ValueError, match="more than once"):
        train_musegnn(mdata, mods=["rna_heart_2", "rna_heart_2"], max_epochs=1, **FAST)
    with pytest.raises(ValueError, match="overwrite the node features"):
        train_musegnn(mdata, key_added="coexpression_features", max_epochs=1, **FAST)
    with pytest.raises(KeyError, match="not in the MuData.*`mods=`"):
        train_musegnn(mdata, mods=["rna_heart_9"], max_epochs=1, **FAST)
    with pytest.raises(ValueError, match="`offload` must be"):
        train_musegnn(mdata, offload="disk", max_epochs=1, **FAST)
    with pytest.raises(FileNotFoundError, match="`offload_dir`.*not a directory"):
        train_musegnn(mdata, offload=True, offload_dir="/nonexistent/musegnn", max_epochs=1, **FAST)
    with pytest.raises(ValueError, match="`decoder_precision` must be 'auto' or 'float32' or 'bfloat16'"):
        train_musegnn(mdata, decoder_precision="half", max_epochs=1, **FAST)
    with pytest.raises(ValueError, match=r"`reconstruction_fraction` must be a number in \(0, 1\]"):
        train_musegnn(mdata, reconstruction_fraction=1.5, max_epochs=1, **FAST)
    with pytest.raises(ValueError, match="`checkpoint_dir` cannot be combined with `strategy='ddp'`"):
        train_musegnn(mdata, strategy="ddp", checkpoint_dir="ckpt", max_epochs=1, **FAST)
    with pytest.raises(ValueError, match="offloaded to a file.*accelerator='cpu'"):
        train_musegnn(mdata, offload=True, accelerator="gpu", max_epochs=1, **FAST)
    assert _state(mdata) == before


def test_graph_kwargs_with_existing_graphs_warn_and_rebuild_builds_again(graphs_mudata):
    mdata = graphs_mudata.copy()
    before = {m: a.varp["coexpression_connectivities"].copy() for m, a in mdata.mod.items()}
    with pytest.warns(UserWarning, match=r"`graph_kwargs` \['n_top_genes'\] ignored.*rebuild=True"):
        train_musegnn(mdata, max_epochs=1, graph_kwargs={"n_top_genes": 30}, **FAST)
    for m, a in mdata.mod.items():
        assert a.var["coexpression_gene"].sum() == 40
        assert (a.varp["coexpression_connectivities"] != before[m]).nnz == 0
    # some graphs kept, built with another n_top_genes: the mix is named
    del mdata.mod["rna_heart_1"].uns["coexpression"]
    with pytest.warns(UserWarning, match=r"keep graphs built with other values.*'n_top_genes': 40"):
        train_musegnn(mdata, max_epochs=1, graph_kwargs={"n_top_genes": 30}, **FAST)
    assert mdata.mod["rna_heart_1"].var["coexpression_gene"].sum() == 30
    # rebuild=True builds every graph again with the options given
    train_musegnn(mdata, max_epochs=1, graph_kwargs={"n_top_genes": 25}, rebuild=True, **FAST)
    for a in mdata.mod.values():
        mask = a.var["coexpression_gene"].to_numpy()
        assert mask.sum() == 25 and a.uns["coexpression"]["params"]["n_top_genes"] == 25
        assert np.abs(a.varm["X_musegnn"][mask]).sum(1).min() > 0 and not a.varm["X_musegnn"][~mask].any()


def test_a_second_call_trains_a_new_model_from_scratch(graphs_mudata):
    mdata = graphs_mudata.copy()
    _, first = train_musegnn(mdata, max_epochs=2, return_model=True, **FAST)
    emb = mdata.mod["rna_heart_1"].varm["X_musegnn"].copy()
    _, second = train_musegnn(mdata, max_epochs=2, return_model=True, **FAST)
    assert list(second.history.index) == [0, 1]  # not appended to the first model's history
    np.testing.assert_array_equal(mdata.mod["rna_heart_1"].varm["X_musegnn"], emb)  # same seed, same fresh start
    first.train(max_epochs=1, **FAST)  # continuing is done on the model
    assert list(first.history.index) == [0, 1, 2]


def test_backed_modalities_train_on_stored_graphs_and_need_memory_to_build(graphs_mudata, tmp_path):
    import mudata as md

    graphs_mudata.write(tmp_path / "data.h5mu")
    backed = md.read_h5mu(tmp_path / "data.h5mu", backed=True)
    gdata = train_musegnn(backed, max_epochs=1, **FAST)
    assert np.isfinite(gdata.obsm["X_musegnn"]).all()
    assert backed.mod["rna_heart_1"].varm["X_musegnn"].shape == (120, 32)
    train_musegnn(backed, max_epochs=1, features="expression", **FAST)  # reads the backed counts
    with pytest.raises(ValueError, match="'rna_heart_1' is backed.*to_memory"):
        train_musegnn(backed, max_epochs=1, rebuild=True, **FAST)


def test_ctrl_c_before_the_first_epoch_writes_nothing(graphs_mudata):
    """An interrupt that leaves only random weights must not write embeddings that mean nothing."""
    mdata = graphs_mudata.copy()
    before = _state(mdata)
    stop = _RaiseMidEpoch(epoch=0, batch=1, error=KeyboardInterrupt())
    with pytest.raises(RuntimeError, match="nothing was written"), pytest.warns(UserWarning, match="interrupted"):
        train_musegnn(mdata, max_epochs=3, callbacks=[stop], **FAST)
    assert _state(mdata) == before
    # after one complete epoch the interrupted model is usable: results are written, with the warning
    stop = _RaiseMidEpoch(epoch=1, batch=1, error=KeyboardInterrupt())
    with pytest.warns(UserWarning, match="interrupted"):
        gdata = train_musegnn(mdata, max_epochs=3, callbacks=[stop], **FAST)
    assert len(gdata.uns["musegnn"]["history"]["loss"]) == 1
    assert all("X_musegnn" in a.varm for a in mdata.mod.values())
