"""Every tutorial notebook still runs: executed with nbclient at reduced size (``MUSEGNN_TUTORIAL_FAST=1``).

The notebooks read the real public data through ``msg.datasets.shared_data``: skipped when ``../shared/data`` is
absent (a user's fresh clone) or nbclient/ipykernel are not installed. Every ``tutorials/*.ipynb`` is picked up.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "tutorials").glob("*.ipynb"))
#: Seconds per cell (the whole reduced notebook takes tens of seconds on 2 busy cores).
CELL_TIMEOUT = 300


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_tutorial_runs(path, shared_data, monkeypatch, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(path, as_version=4)
    monkeypatch.setenv("MUSEGNN_TUTORIAL_FAST", "1")
    monkeypatch.setenv("MUSEGNN_SC_DATA", str(shared_data))
    monkeypatch.setenv("MPLBACKEND", "agg")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    # The kernel imports this checkout's package, as the test process does.
    src = str(ROOT / "src")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])]))
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors


def test_notebooks_committed_with_outputs():
    """The docs do not execute notebooks (``nb_execution_mode = "off"``): each is committed executed, in order."""
    nbformat = pytest.importorskip("nbformat")
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
        counts = [c.get("execution_count") for c in code]
        assert all(isinstance(n, int) for n in counts), f"{path.name}: cells without outputs (not executed)"
        assert counts == sorted(counts), f"{path.name}: cells executed out of order"
        errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{path.name}: committed with an error output"
        assert "../../shared" not in "".join(c.source for c in code), f"{path.name}: read data via shared_data()"
