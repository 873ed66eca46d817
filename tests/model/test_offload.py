"""Offloaded decoders: the same training, bit for bit, with only the decoder of the step at hand in memory."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch

from musegnn_sc.model import _offload
from musegnn_sc.model._model import MuSeGNN

FAST = {"progress_bar": False, "lr_encoder": 1e-3, "decoder_precision": "float32"}


def _small(make):
    return make(n_datasets=3, genes_per_dataset=60, genes_per_module=20)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def _same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _Residency(pl.Callback):
    """Record, before every step, how much of the decoders' arena and of the moments' arena is resident."""

    def __init__(self):
        self.decoders, self.moments, self.moments_owned = [], [], []

    def on_train_batch_start(self, trainer, plan, batch, batch_idx):
        if trainer.current_epoch == 0:
            return  # the test itself read every decoder before training
        self.decoders.append(_offload.resident_bytes(plan.module.arena))
        self.moments.append(_offload.resident_bytes(plan._moments))
        state = plan._optimizer.state
        self.moments_owned.append(
            all(plan._moments.owns(state[p]["exp_avg"]) for p in plan.module.decoder_parameters() if p in state)
        )


class _Raise(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 2 and batch_idx == 2:
            raise RuntimeError("a failure inside training")


def test_offloaded_decoders_train_exactly_as_in_memory(make_planted, tmp_path):
    # decoders of 1 MB each (300 genes), so that the pages the kernel maps around a fault (64 KB) are small beside them
    mdata = make_planted(n_datasets=3, genes_per_dataset=300, genes_per_module=100, n_modules=4)
    plain = MuSeGNN(mdata, offload=False)
    off = MuSeGNN(mdata, offload=True, offload_dir=tmp_path)
    assert plain.module.arena is None and off.module.offloaded
    assert all(off.module.arena.owns(p) for p in off.module.decoder_parameters())
    assert not any(off.module.arena.owns(p) for p in off.module.encoder_parameters())
    assert list(tmp_path.iterdir()) == []  # the file is unlinked as soon as it is mapped
    assert _same_weights(_weights(plain), _weights(off))  # same initialisation
    spy = _Residency()
    plain.train(max_epochs=4, **FAST)
    off.train(max_epochs=4, callbacks=[spy], **FAST)
    pd.testing.assert_frame_equal(plain.history, off.history)
    assert _same_weights(_weights(plain), _weights(off))
    np.testing.assert_array_equal(
        plain.get_gene_embeddings().obsm["X_musegnn"], off.get_gene_embeddings().obsm["X_musegnn"]
    )
    # Adam's moments lived in their own arena, and between steps no decoder stayed in the process: at most the pages
    # the kernel maps around a fault, a sixteenth of a decoder here (Linux: 16 pages)
    assert all(spy.moments_owned) and len(spy.moments_owned) == 9
    decoder_bytes = 4 * _offload.mlp_decoder_parameters([300])
    assert max(spy.decoders) < decoder_bytes / 8, (spy.decoders, decoder_bytes)
    assert max(spy.moments) < 2 * decoder_bytes / 8, spy.moments


def test_offloaded_model_falls_back_on_its_last_complete_epoch(make_planted, tmp_path):
    mdata = _small(make_planted)
    two = MuSeGNN(mdata, offload=True, offload_dir=tmp_path)
    two.train(max_epochs=2, **FAST)
    model = MuSeGNN(mdata, offload=True, offload_dir=tmp_path)
    with pytest.raises(RuntimeError, match="a failure inside training"):
        model.train(max_epochs=5, callbacks=[_Raise()], **FAST)
    pd.testing.assert_frame_equal(model.history, two.history)
    # the decoders of graphs 0 and 1 had been updated in epoch 2: they are back to their epoch-1 values
    assert _same_weights(_weights(model), _weights(two))


def test_save_and_load_an_offloaded_model(make_planted, tmp_path):
    model = MuSeGNN(_small(make_planted), offload=True, offload_dir=tmp_path)
    model.train(max_epochs=2, **FAST)
    model.save(tmp_path / "model")
    assert _offload.resident_bytes(model.module.arena) == 0  # save read every decoder, then let the pages go
    for offload in (False, True):
        back = MuSeGNN.load(tmp_path / "model", offload=offload, offload_dir=tmp_path if offload else None)
        assert back.module.offloaded is offload
        if offload:
            assert _offload.resident_bytes(back.module.arena) == 0  # loading wrote every decoder, then let them go
        assert _same_weights(_weights(back), _weights(model))
    assert _offload.resident_bytes(model.module.arena) > 0  # the comparison read them back in: the count sees pages


class _MomentsInFile(pl.Callback):
    """Whether, at each step, the offloaded decoders' Adam moments are the tensors of the moments' arena."""

    def __init__(self):
        self.owned = []

    def on_train_batch_start(self, trainer, plan, batch, batch_idx):
        state = plan._optimizer.state
        self.owned.append(
            all(
                plan._moments.owns(state[p][k])
                for p in plan.module.decoder_parameters()
                if p in state
                for k in ("exp_avg", "exp_avg_sq")
            )
        )


def test_resuming_an_offloaded_model_puts_the_moments_back_in_the_file(make_planted, tmp_path):
    mdata = _small(make_planted)
    whole = MuSeGNN(mdata, offload=True, offload_dir=tmp_path)
    whole.train(max_epochs=4, **FAST)
    model = MuSeGNN(mdata, offload=True, offload_dir=tmp_path)
    model.train(max_epochs=2, checkpoint_dir=tmp_path / "ckpt", checkpoint_every=1, **FAST)
    spy = _MomentsInFile()
    model.train(max_epochs=4, checkpoint_dir=tmp_path / "ckpt", resume=True, callbacks=[spy], **FAST)
    # the checkpoint's moments (restored in memory) were copied into the file before the first resumed step ...
    assert spy.owned and all(spy.owned)
    # ... with their values: the resumed run ends where the uninterrupted one does
    pd.testing.assert_frame_equal(model.history, whole.history)
    assert _same_weights(_weights(model), _weights(whole))


def test_an_offloaded_model_does_not_train_on_a_device(make_planted, tmp_path):
    model = MuSeGNN(_small(make_planted), offload=True, offload_dir=tmp_path)
    before = _weights(model)
    with pytest.raises(ValueError, match="offloaded to a file.*accelerator='cpu'.*offload=False"):
        model.train(max_epochs=1, accelerator="gpu", **FAST)
    assert _same_weights(_weights(model), before) and model.history.empty


def test_auto_offloads_when_the_decoders_would_not_fit(make_planted, monkeypatch):
    mdata = _small(make_planted)
    need = _offload.TRAINING_BYTES_PER_PARAMETER * _offload.mlp_decoder_parameters([60, 60, 60])
    monkeypatch.setattr(_offload, "available_memory", lambda: 10 * need)
    assert not MuSeGNN(mdata).module.offloaded
    monkeypatch.setattr(_offload, "available_memory", lambda: need)
    assert MuSeGNN(mdata).module.offloaded
    assert not MuSeGNN(mdata, decoder="inner_product").module.offloaded


def test_offload_options_that_do_nothing_say_so(make_planted, tmp_path):
    mdata = _small(make_planted)
    with pytest.warns(UserWarning, match="`offload_dir` is ignored.*offload=False"):
        MuSeGNN(mdata, offload=False, offload_dir=tmp_path)
    with pytest.warns(UserWarning, match="`offload=True` is ignored.*inner_product"):
        MuSeGNN(mdata, offload=True, decoder="inner_product")
    with pytest.raises(ValueError, match="`offload` must be"):
        MuSeGNN(mdata, offload="yes")
    with pytest.raises(FileNotFoundError, match="offload_dir"):
        MuSeGNN(mdata, offload=True, offload_dir=tmp_path / "missing")


def test_an_arena_larger_than_the_disk_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10, 9, 1))
    with pytest.raises(OSError, match="needs .* GB of disk .* `offload_dir=`"):
        _offload.FileArena(1 << 20, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_arena_writes_through_the_file_without_mapping_the_pages(tmp_path):
    arena = _offload.FileArena(_offload.arena_floats([300 * 300, 10]), tmp_path)
    big, small = arena.tensor((300, 300)), arena.tensor((10,))
    src = torch.randn(300, 300)
    arena.write(big, src)
    assert _offload.resident_bytes(arena) == 0  # written through the descriptor, not through the mapping
    torch.testing.assert_close(big, src, rtol=0, atol=0)  # and the mapping sees it
    assert torch.equal(small, torch.zeros(10))  # the neighbour is untouched
    with pytest.raises(ValueError, match="contiguous tensor of this arena"):
        arena.write(torch.zeros(300, 300), src)


def test_auto_accelerator_trains_an_offloaded_model_on_the_cpu(make_planted, tmp_path, monkeypatch):
    from musegnn_sc.model import _model

    monkeypatch.setattr(_model, "_accelerator_is_device", lambda accelerator: True)  # as on a machine with a GPU
    model = MuSeGNN(_small(make_planted), offload=True, offload_dir=tmp_path)
    model.train(max_epochs=1, accelerator="auto", **FAST)  # 'auto' is the CPU for decoders kept in a host file
    assert len(model.history) == 1 and model.module.offloaded
    with pytest.raises(ValueError, match="offloaded to a file"):
        model.train(max_epochs=1, accelerator="cuda", **FAST)
