"""The timing baseline of ``benchmarks/authors_step.py`` has the authors' architecture and trains."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
pytest.importorskip("torch_geometric")


@pytest.fixture(scope="module")
def authors_step():
    if not (BENCHMARKS / "authors_step.py").exists():
        pytest.skip("benchmarks/ is not beside the tests")
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import authors_step

        yield authors_step
    finally:
        sys.path.remove(str(BENCHMARKS))


def _graphs(n_genes=(30, 30), n_cells=(50, 70), seed=0):
    rng = np.random.default_rng(seed)
    universe = np.array([f"G{k}" for k in range(40)], dtype=object)
    module = np.arange(40) % 4
    profiles, adjacencies, genes = [], [], []
    for n, c in zip(n_genes, n_cells, strict=True):
        idx = np.sort(rng.choice(40, size=n, replace=False))
        same = module[idx][:, None] == module[idx][None, :]
        adj = same | (rng.random((n, n)) < 0.05)
        adj = adj | adj.T
        np.fill_diagonal(adj, True)
        adjacencies.append(sparse.csr_matrix(adj.astype(np.float32)))
        profiles.append(rng.normal(size=(n, c)).astype(np.float32) + module[idx][:, None])
        genes.append(universe[idx])
    return profiles, adjacencies, genes


def test_parameter_count_is_the_reference_architecture(authors_step):
    # reference_implementation.md 1.2: per dataset 4 (n_cells 128 + 128) + GraphNorm(128) + 3 (n^2 + n); one shared
    # block of 58,048 parameters
    profiles, adjacencies, genes = _graphs()
    res = authors_step.train_authors_step(profiles, adjacencies, genes, epochs=1)
    per_dataset = [4 * (c * 128 + 128) + 3 * 128 + 3 * (n * n + n) for n, c in ((30, 50), (30, 70))]
    assert res["parameters"] == sum(per_dataset) + 58_048


def test_it_trains_and_reports_each_epoch(authors_step):
    profiles, adjacencies, genes = _graphs()
    seen = []
    res = authors_step.train_authors_step(profiles, adjacencies, genes, epochs=25, on_epoch=seen.append)
    assert seen == list(range(25)) and len(res["epoch_s"]) == 25
    assert np.isfinite(res["bce"]).all()
    assert res["bce"][-1] < res["bce"][0] - 0.05
