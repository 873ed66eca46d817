"""Training on a CUDA device (skipped without one): the same model as on the CPU, up to floating-point order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musegnn_sc.model._model import MuSeGNN

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

FAST = {"progress_bar": False, "lr_encoder": 1e-3}


def test_training_on_a_gpu_matches_the_cpu_and_returns_a_cpu_model(make_planted):
    mdata = make_planted(genes_per_dataset=60, genes_per_module=20)
    cpu, gpu = MuSeGNN(mdata), MuSeGNN(mdata)
    cpu.train(max_epochs=5, accelerator="cpu", decoder_precision="float32", **FAST)
    gpu.train(max_epochs=5, accelerator="gpu", devices=1, decoder_precision="float32", **FAST)
    assert all(p.device.type == "cpu" for p in gpu.module.parameters())
    a = cpu.get_gene_embeddings().obsm["X_musegnn"]
    b = gpu.get_gene_embeddings().obsm["X_musegnn"]
    # TF32 and kernel order differ: close, not equal
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99
    np.testing.assert_allclose(gpu.history["bce"], cpu.history["bce"], rtol=0.05)


def test_auto_decoder_precision_on_a_gpu_is_recorded(make_planted):
    model = MuSeGNN(make_planted(genes_per_dataset=40, genes_per_module=10))
    model.train(max_epochs=2, accelerator="gpu", devices=1, **FAST)
    # bfloat16 where the GPU multiplies it in hardware (compute capability 8, Ampere, and later), not where emulated
    expected = "bfloat16" if torch.cuda.get_device_capability(0)[0] >= 8 else "float32"
    assert model.train_params_["decoder_precision"] == expected
