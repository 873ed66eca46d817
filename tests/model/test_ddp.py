"""Dataset-parallel training on the CPU: 2 processes (gloo), as on a multi-GPU node."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = """
import json, os, sys, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {conftest_dir!r})
import lightning.pytorch as pl
import torch
torch.set_num_threads(1)
from conftest import planted_mudata
from musegnn_sc.model._model import MuSeGNN

class Spy(pl.Callback):
    # which decoders each step of this rank updated (before the plan forgets it at its own batch end)
    def __init__(self):
        self.stepped = []
    def on_train_batch_end(self, trainer, plan, outputs, batch, batch_idx):
        ids = {{id(p): k for k, d in enumerate(plan.module.decoders) for p in d.parameters()}}
        self.stepped.append(sorted({{ids[id(p)] for p in plan._stepped}}))

mdata = planted_mudata(n_datasets=5, genes_per_dataset=40, genes_per_module=10)
model = MuSeGNN(mdata, offload={offload})
spy = Spy()
model.train(max_epochs=3, accelerator="cpu", devices=2, strategy="ddp", progress_bar=False, lr_encoder=1e-3,
            reconstruction_fraction=1.0, decoder_precision="float32",
            callbacks=[spy])
rank = int(os.environ.get("LOCAL_RANK", "0"))
torch.save(model.module.state_dict(), os.path.join({out!r}, f"rank{{rank}}.pt"))
json.dump(spy.stepped, open(os.path.join({out!r}, f"rank{{rank}}.json"), "w"))
if rank == 0:
    model.save(os.path.join({out!r}, "model"))
"""


@pytest.mark.slow
@pytest.mark.parametrize("offload", [False, True])
def test_dataset_parallel_training_on_two_cpu_processes(tmp_path, offload):
    from musegnn_sc.model._model import MuSeGNN

    script = tmp_path / "train_ddp.py"
    script.write_text(
        textwrap.dedent(SCRIPT.format(conftest_dir=str(Path(__file__).parent), out=str(tmp_path), offload=offload))
    )
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # graphs are dealt out in turn: rank 0 trains 0, 2, 4 and rank 1 trains 1, 3 plus an empty step, and a step
    # updates the decoder of its own graph only
    steps = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert steps[0] == [[0], [2], [4]] * 3
    assert steps[1] == [[1], [3], []] * 3
    # every rank ends with the same model: encoders and shared blocks kept in step, decoders sent by their owners
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        torch.testing.assert_close(states[0][key], states[1][key], rtol=0, atol=0, msg=key)
    model = MuSeGNN.load(tmp_path / "model")
    assert model.train_params_["world_size"] == 2
    assert len(model.history) == 3
    hist = model.history
    assert np.isfinite(hist.to_numpy()).all() and hist["bce"].iloc[-1] < hist["bce"].iloc[0]
    assert np.isfinite(model.get_gene_embeddings().obsm["X_musegnn"]).all()


NAN_SCRIPT = """
import os, sys, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {conftest_dir!r})
import lightning.pytorch as pl
import torch
torch.set_num_threads(1)
from conftest import planted_mudata
from musegnn_sc.model._model import MuSeGNN

class Poison(pl.Callback):
    # rank 1 only: its graph's encoder turns NaN at the first step of the second epoch
    def on_train_batch_start(self, trainer, plan, batch, batch_idx):
        if trainer.global_rank == 1 and trainer.current_epoch == 1 and batch_idx == 0:
            with torch.no_grad():
                for p in plan.module.encoders[int(batch)].parameters():
                    p.fill_(float("nan"))

mdata = planted_mudata(n_datasets=4, genes_per_dataset=40, genes_per_module=10)
model = MuSeGNN(mdata)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model.train(max_epochs=4, accelerator="cpu", devices=2, strategy="ddp", progress_bar=False, callbacks=[Poison()])
rank = int(os.environ.get("LOCAL_RANK", "0"))
torch.save(model.module.state_dict(), os.path.join({out!r}, f"rank{{rank}}.pt"))
open(os.path.join({out!r}, f"rank{{rank}}.txt"), "w").write(
    f"{{len(model.history)}}\\n" + "\\n".join(str(w.message) for w in caught)
)
"""


@pytest.mark.slow
def test_a_non_finite_loss_on_one_rank_stops_every_rank(tmp_path):
    script = tmp_path / "nan_ddp.py"
    script.write_text(textwrap.dedent(NAN_SCRIPT.format(conftest_dir=str(Path(__file__).parent), out=str(tmp_path))))
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [(tmp_path / f"rank{r}.txt").read_text().splitlines() for r in (0, 1)]
    # both ranks stopped in the second epoch and kept the first one's weights (no rank waited for the other)
    assert [r[0] for r in reports] == ["1", "1"]
    assert all(any("non-finite" in line or "NaN" in line for line in r[1:]) for r in reports), reports
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for key in states[0]:
        assert torch.isfinite(states[0][key]).all(), key
        torch.testing.assert_close(states[0][key], states[1][key], rtol=0, atol=0, msg=key)
