"""Distributed data parallel training on the CPU: 2 processes (gloo), as on a multi-GPU node."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

SCRIPT = """
import os, sys, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {conftest_dir!r})
import torch
torch.set_num_threads(1)
from conftest import planted_mudata
from musegnn_sc.model._model import MuSeGNN

mdata = planted_mudata(n_datasets=4, genes_per_dataset=40, genes_per_module=10)
model = MuSeGNN(mdata)
model.train(max_epochs=3, accelerator="cpu", devices=2, strategy="ddp", progress_bar=False)
if int(os.environ.get("LOCAL_RANK", "0")) == 0:
    model.save({out!r})
"""


@pytest.mark.slow
def test_ddp_on_cpu_with_two_processes(tmp_path):
    from musegnn_sc.model._model import MuSeGNN

    script = tmp_path / "train_ddp.py"
    out = tmp_path / "model"
    script.write_text(textwrap.dedent(SCRIPT.format(conftest_dir=str(Path(__file__).parent), out=str(out))))
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = MuSeGNN.load(out)
    assert model.train_params_["world_size"] == 2
    assert len(model.history) == 3
    assert np.isfinite(model.history.to_numpy()).all()
    assert np.isfinite(model.get_gene_embeddings().obsm["X_musegnn"]).all()
