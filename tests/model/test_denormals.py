"""Flushing denormals reaches torch's worker threads and is undone afterwards."""

from __future__ import annotations

import pytest
import sklearn.neighbors  # noqa: F401  (bundles an OpenMP runtime of its own: torch's must still be the one used)
import torch

from musegnn_sc.model._denormals import set_flush_denormal_all_threads

TINY = 1e-39  # below float32's smallest normal number (1.18e-38)


def _product_of_denormals() -> float:
    # A matrix product runs on torch's intra-op threads; with denormals treated as zero its result is exactly 0, and
    # in IEEE arithmetic it is 1,000 x 1e-39 = 1e-36 (a normal number).
    x = torch.full((512, 1000), TINY)
    return float((x @ torch.ones(1000, 512)).abs().max())


@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU cannot flush denormals")
def test_flush_reaches_every_thread_and_is_undone():
    before = _product_of_denormals()
    assert before == pytest.approx(1e-36, rel=1e-3)
    try:
        reached = set_flush_denormal_all_threads(True)
        flushed = _product_of_denormals()
    finally:
        set_flush_denormal_all_threads(False)
    if not reached:
        pytest.skip("the OpenMP runtime of torch was not found: only the calling thread is flushed")
    assert flushed == 0.0
    assert _product_of_denormals() == before


def test_training_restores_ieee_behaviour(make_planted):
    from musegnn_sc.model._model import MuSeGNN

    before = _product_of_denormals()
    model = MuSeGNN(make_planted(n_datasets=2, genes_per_dataset=40, genes_per_module=10))
    model.train(max_epochs=1, progress_bar=False)
    assert _product_of_denormals() == before > 0
