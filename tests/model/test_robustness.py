"""Nothing half-written, nothing silent: the model's answers to failures and to a hurried user."""

from __future__ import annotations

import pickle

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch

from musegnn_sc.model._model import MODEL_FILE, MuSeGNN

FAST = {"progress_bar": False, "lr_encoder": 1e-3}


def _small(make):
    return make(genes_per_dataset=40, genes_per_module=10)


def _embeddings(model):
    return np.concatenate(list(model.get_latent_representation().values()))


def _weights(model):
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def _same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _Raise(pl.Callback):
    """Raise ``error`` before step ``batch`` of ``epoch`` (mid-epoch when ``batch > 0``)."""

    def __init__(self, epoch, batch, error=RuntimeError("a failure inside training")):
        self.epoch, self.batch, self.error = epoch, batch, error

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise self.error


@pytest.fixture(scope="module")
def two_epochs(make_planted):
    """A model trained 2 epochs without incident: what an interrupted run must fall back on."""
    model = MuSeGNN(_small(make_planted))
    model.train(max_epochs=2, **FAST)
    return model


# ---------------------------------------------------------------- untrained models


def test_getters_of_an_untrained_model_warn_that_the_weights_are_random(make_planted, tmp_path):
    model = MuSeGNN(_small(make_planted))
    for getter in (model.get_latent_representation, model.get_gene_embeddings):
        with pytest.warns(UserWarning, match=rf"{getter.__name__}.*not been trained.*random.*`model.train\(\)`"):
            getter()
    model.save(tmp_path / "untrained")
    with pytest.warns(UserWarning, match="not been trained"):
        MuSeGNN.load(tmp_path / "untrained").get_gene_embeddings()
    model.train(max_epochs=1, **FAST)
    model.get_gene_embeddings()  # trained: no warning (warnings are errors here)


# ---------------------------------------------------------------- failures during training


@pytest.mark.parametrize("batch", [0, 1])
def test_an_exception_mid_training_keeps_the_last_complete_epoch(make_planted, two_epochs, batch):
    model = MuSeGNN(_small(make_planted))
    with pytest.raises(RuntimeError, match="a failure inside training") as info:
        model.train(max_epochs=10, callbacks=[_Raise(epoch=2, batch=batch)], **FAST)
    assert "last complete epoch (2 epoch(s) in the history" in "\n".join(info.value.__notes__)
    assert not model.module.training and not any(m.training for m in model.module.modules())
    pd.testing.assert_frame_equal(model.history, two_epochs.history)
    assert _same_weights(_weights(model), _weights(two_epochs))
    np.testing.assert_array_equal(_embeddings(model), _embeddings(two_epochs))
    assert model.is_trained_ and model.train_params_["max_epochs"] == 10
    model.train(max_epochs=1, **FAST)  # still trainable, the history goes on from there
    assert list(model.history.index) == [0, 1, 2]


def test_an_exception_in_the_first_epoch_leaves_the_model_untouched(make_planted, two_epochs):
    model = MuSeGNN(_small(make_planted))
    start = _weights(model)
    with pytest.raises(ValueError, match="bad batch"):
        model.train(max_epochs=5, callbacks=[_Raise(epoch=0, batch=2, error=ValueError("bad batch"))], **FAST)
    assert _same_weights(_weights(model), start)
    assert model.history.empty and not model.is_trained_ and model.train_params_ == {}
    assert not model.module.training
    # after two good epochs, a failure on the next call keeps them and the parameters of the call that made them
    model.train(max_epochs=2, **FAST)
    params = dict(model.train_params_)
    with pytest.raises(ValueError, match="bad batch"):
        model.train(max_epochs=3, lr_decoder=1e-2, callbacks=[_Raise(0, 1, ValueError("bad batch"))], **FAST)
    assert model.train_params_ == params and len(model.history) == 2
    assert _same_weights(_weights(model), _weights(two_epochs))


def test_ctrl_c_mid_epoch_keeps_weights_and_history_of_the_same_epochs(make_planted, two_epochs):
    model = MuSeGNN(_small(make_planted))
    with pytest.warns(UserWarning, match="interrupted after 2 complete epoch"):
        model.train(max_epochs=10, callbacks=[_Raise(epoch=2, batch=2, error=KeyboardInterrupt())], **FAST)
    assert len(model.history) == 2 and not model.module.training
    assert _same_weights(_weights(model), _weights(two_epochs))


def test_a_failing_trainer_option_leaves_eval_mode(make_planted):
    model = MuSeGNN(_small(make_planted))
    with pytest.raises(TypeError, match="`max_epoch` -> `max_epochs`"):
        model.train(max_epoch=3)
    with pytest.raises(ValueError, match="`temperature` must be greater than 0"):
        model.train(max_epochs=1, temperature=0.0)
    with pytest.raises(TypeError, match="`n_contrastive` must be an integer"):
        model.train(max_epochs=1, n_contrastive=10.5)
    with pytest.raises((ValueError, TypeError, RuntimeError)):
        model.train(max_epochs=1, accelerator="no-such-device", progress_bar=False)
    assert not model.module.training and model.history.empty


# ---------------------------------------------------------------- saving and loading


@pytest.fixture
def saved(two_epochs, tmp_path):
    path = tmp_path / "model"
    two_epochs.save(path)
    return path


def _damage(file, how):
    data = file.read_bytes()
    if how == "truncated":
        file.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        file.write_bytes(b"")
    elif how == "text":
        file.write_text("these are not the weights you are looking for\n")
    elif how == "tensor":
        torch.save(torch.zeros(3), file)
    elif how == "pickle":
        with open(file, "wb") as f:
            pickle.dump({"format": 1, "graphs": pd.DataFrame({"a": [1]})}, f)
    elif how == "object":
        torch.save({"format": 1, "model": torch.nn.Linear(2, 2)}, file)
    elif how == "incomplete":
        payload = torch.load(file, weights_only=True)
        del payload["graphs"]
        torch.save(payload, file)
    elif how == "bad weights":
        payload = torch.load(file, weights_only=True)
        payload["state_dict"].popitem()
        del payload["checksum"]  # as a file written before checksums were stored
        torch.save(payload, file)
    elif how == "changed weights":  # bit rot: the archive still reads
        payload = torch.load(file, weights_only=True)
        next(iter(payload["state_dict"].values())).view(-1)[0] += 1.0
        torch.save(payload, file)
    elif how == "flipped bytes":
        data = bytearray(data)
        data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
        file.write_bytes(bytes(data))
    elif how == "other format":
        payload = torch.load(file, weights_only=True)
        payload["format"] = 99
        torch.save(payload, file)
    elif how == "directory":
        file.unlink()
        file.mkdir()


@pytest.mark.parametrize(
    ("how", "match"),
    [
        ("truncated", "damaged, truncated"),
        ("empty", "damaged, truncated"),
        ("text", "not a model saved|damaged, truncated"),
        ("tensor", "holds a Tensor"),
        ("pickle", "not a model saved|damaged, truncated"),
        ("object", "not a model saved"),
        ("incomplete", r"missing entries \['graphs'\]"),
        ("bad weights", "weights do not fit"),
        ("changed weights", "checksum mismatch"),
        ("flipped bytes", "checksum mismatch|damaged"),
        ("other format", "format 99"),
        ("directory", "damaged, truncated"),
    ],
)
def test_load_answers_a_damaged_or_foreign_file_with_one_clear_error(saved, how, match):
    file = saved / MODEL_FILE
    _damage(file, how)
    with pytest.raises(ValueError, match=match) as info:
        MuSeGNN.load(saved)
    text = str(info.value)
    assert str(file) in text
    assert "weights_only" not in text
    err = info.value  # one error: torch's own (with its advice to load unsafely) is not chained to it
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


def test_load_of_a_missing_directory_or_of_the_file_itself(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="No saved model.*MuSeGNN.save"):
        MuSeGNN.load(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="is a file.*directory given to `MuSeGNN.save`"):
        MuSeGNN.load(saved / MODEL_FILE)


def test_saved_file_holds_only_what_a_safe_load_reads(saved, two_epochs):
    payload = torch.load(saved / MODEL_FILE, weights_only=True)  # would raise on any other object

    def plain(x):
        if isinstance(x, dict):
            return all(isinstance(k, str) and plain(v) for k, v in x.items())
        if isinstance(x, list):
            return all(plain(v) for v in x)
        return x is None or isinstance(x, torch.Tensor | str | int | float | bool)

    assert plain(payload)
    del payload["checksum"]  # files written before the checksum still load
    torch.save(payload, saved / MODEL_FILE)
    np.testing.assert_array_equal(_embeddings(MuSeGNN.load(saved)), _embeddings(two_epochs))


def test_overwrite_replaces_model_pt_atomically_and_keeps_other_files(saved, two_epochs, make_planted, monkeypatch):
    (saved / "notes.txt").write_text("mine")
    other = MuSeGNN(_small(make_planted), seed=3)
    other.train(max_epochs=1, **FAST)
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.flush()  # half-written, then the disk fills up
        f.truncate(100)
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        other.save(saved, overwrite=True)
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(p.name for p in saved.iterdir()) == [MODEL_FILE, "notes.txt"]  # no temporary file left
    np.testing.assert_array_equal(_embeddings(MuSeGNN.load(saved)), _embeddings(two_epochs))  # old model intact
    other.save(saved, overwrite=True)
    assert sorted(p.name for p in saved.iterdir()) == [MODEL_FILE, "notes.txt"]
    np.testing.assert_array_equal(_embeddings(MuSeGNN.load(saved)), _embeddings(other))
    with pytest.raises(FileExistsError, match="is a file"):
        other.save(saved / "notes.txt", overwrite=True)


def test_load_with_a_mudata_lacking_modalities_names_parameters_that_exist(saved, make_planted):
    mdata = _small(make_planted)
    del mdata.mod["rna_2"]
    with pytest.raises(KeyError, match=r"lacks modality\(ies\) \['rna_2'\].*`mdata=`.*load without `mdata`") as info:
        MuSeGNN.load(saved, mdata=mdata)
    assert "mods=" not in str(info.value)
    with pytest.raises(TypeError, match="got an AnnData"):
        MuSeGNN.load(saved, mdata=mdata.mod["rna_0"])


# ---------------------------------------------------------------- a hurried user


def test_wrong_inputs_to_the_model_get_errors_that_name_the_fix(make_planted):
    mdata = _small(make_planted)
    with pytest.raises(TypeError, match=r"got an AnnData.*mudata.MuData\(\{'rna': adata\}\)"):
        MuSeGNN(mdata.mod["rna_0"])
    with pytest.raises(TypeError, match="got an AnnData"):
        MuSeGNN.setup_mudata(mdata.mod["rna_0"])
    with pytest.raises(TypeError, match="got ndarray"):
        MuSeGNN(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="more than once"):
        MuSeGNN.setup_mudata(mdata, mods=["rna_0", "rna_0"])
    MuSeGNN.setup_mudata(mdata)
    del mdata.mod["rna_1"]
    with pytest.raises(KeyError, match=r"\['rna_1'\] registered.*no longer in the MuData.*setup_mudata") as info:
        MuSeGNN(mdata)
    assert "check `mods=`" not in str(info.value)
    for a in mdata.mod.values():
        del a.uns["coexpression"]
    del mdata.uns["musegnn_setup"]
    with pytest.raises(KeyError, match="no co-expression graph.*build_coexpression_graphs"):
        MuSeGNN(mdata)


def test_saved_models_have_the_modes_of_ordinary_files(two_epochs, tmp_path):
    """Temporary files and directories are private (0600/0700); the saved model must not stay so."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = tmp_path / "model"
        two_epochs.save(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o755
        assert stat.S_IMODE((path / MODEL_FILE).stat().st_mode) == 0o644
        two_epochs.save(path, overwrite=True)
        assert stat.S_IMODE((path / MODEL_FILE).stat().st_mode) == 0o644
    finally:
        os.umask(old)
