"""``musegnn-sc benchmark`` follows the rules of every verb: checked inputs, refused outputs, one-line errors.

Captured with ``capfd`` (file descriptors), not ``capsys``: the package logger's handler holds the stderr of import
time, which ``capsys`` does not replace.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import mudata
import pandas as pd
import pytest

import musegnn_sc as msg
from musegnn_sc.benchmark import _runner, run_benchmark
from musegnn_sc.cli import main

FAST = ["--methods", "pca", "--n-top-genes", "40"]


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    """Two small simulated RNA datasets in one .h5mu (raw counts: the benchmark builds their graphs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = msg.datasets.toy_mudata(
            n_cells=120,
            n_genes=100,
            n_modules=3,
            module_size=10,
            n_rna=2,
            include_mouse=False,
            include_atac=False,
            include_spatial=False,
        )
    del m.uns["toy_truth"]
    path = tmp_path_factory.mktemp("collection") / "collection.h5mu"
    with mudata.set_options(pull_on_update=False):
        m.write(path)
    return path


def _listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error_line(capfd) -> str:
    err = capfd.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("musegnn-sc: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def bad_inputs(collection, tmp_path):
    text = tmp_path / "table.h5mu"
    text.write_text("gene\tcell\tcount\nA\tc1\t3\n")
    adata = tmp_path / "one.h5ad"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mudata.read_h5mu(collection).mod["rna_heart_1"].write_h5ad(adata)
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "scores.csv").write_text("keep me")
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    inside = tmp_path / "results"
    inside.mkdir()
    (inside / "c.h5mu").write_bytes(collection.read_bytes())
    empty_dir = tmp_path / "empty_data"
    empty_dir.mkdir()
    out = str(tmp_path / "out")
    c = str(collection)
    return {
        "missing collection": (
            ["--collection", str(tmp_path / "nope.h5mu"), "--out", out],
            "nope.h5mu' does not exist",
        ),
        "collection is a directory": (["--collection", str(tmp_path), "--out", out], "is a directory"),
        "collection is text": (["--collection", str(text), "--out", out], "table.h5mu' is a text file"),
        "collection is an h5ad": (["--collection", str(adata), "--out", out], "this command reads .h5mu"),
        "out exists": (["--collection", c, "--out", str(existing)], "already exists: pass --resume"),
        "out is a file": (["--collection", c, "--out", str(a_file), "--resume"], "a_file' is a file"),
        "out holds the collection": (
            ["--collection", str(inside / "c.h5mu"), "--out", str(inside), "--overwrite"],
            "contains the input",
        ),
        "resume and overwrite": (["--collection", c, "--out", out, "--resume", "--overwrite"], "pass one of them"),
        "missing data dir": (["--data-dir", str(tmp_path / "nodata"), "--out", out], "nodata' does not exist"),
        "data dir without the files": (["--data-dir", str(empty_dir), "--out", out], "empty_data"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing collection",
        "collection is a directory",
        "collection is text",
        "collection is an h5ad",
        "out exists",
        "out is a file",
        "out holds the collection",
        "resume and overwrite",
        "missing data dir",
        "data dir without the files",
    ],
)
def test_bad_input_is_one_line_and_exit_2(bad_inputs, tmp_path, capfd, case):
    argv, needle = bad_inputs[case]
    before = _listing(tmp_path)
    assert main(["benchmark", *argv, *FAST]) == 2
    line = _one_error_line(capfd)
    assert needle in line
    assert _listing(tmp_path) == before, "something was written or removed"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("option", "value", "what"),
    [
        ("--n-top-genes", "0", "a positive integer"),
        ("--n-top-genes", "many", "a positive integer"),
        ("--epochs", "-3", "a positive integer"),
        ("--max-cells", "1.5", "a positive integer"),
        ("--n-jobs", "0", "a positive integer or -1"),
        ("--musegnn-epochs", "0", "a positive integer"),
        ("--seeds", "-1", "an integer >= 0"),
        ("--variant", "wide=nomethod:width=64", "a variant needs a new NAME"),
        ("--variant", "mae_wide:width=64", "expected NAME=METHOD:KEY=VALUE"),
    ],
)
def test_bad_option_values_are_usage_errors(collection, tmp_path, capfd, option, value, what):
    """As for every verb, argparse's usage, then one error line naming the option; nothing is written."""
    with pytest.raises(SystemExit) as exc:
        main(["benchmark", "--collection", str(collection), "--out", str(tmp_path / "out"), option, value])
    assert exc.value.code == 2
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert errors[0] == err.strip().splitlines()[-1]
    assert errors[0].startswith("musegnn-sc benchmark: error: argument ")
    assert option in errors[0] and what in errors[0]
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_n_jobs_accepts_every_core(collection):
    from musegnn_sc.cli import build_parser

    args = build_parser().parse_args(["benchmark", "--n-jobs", "-1", "--collection", str(collection)])
    assert args.n_jobs == -1


def test_out_needs_resume_or_overwrite(collection, tmp_path, capfd):
    out = tmp_path / "out"
    argv = ["benchmark", "--collection", str(collection), "--out", str(out), *FAST]
    assert main([*argv, "--seeds", "0"]) == 0
    first = capfd.readouterr().out
    assert "building co-expression graphs" in first
    files = _listing(out)
    assert {"graphs.h5mu", "scores.csv", "summary.csv", "summary.md", "summary.png", "settings.json"} == set(files)
    assert set(files) == set(_runner.OUTPUT_FILES)

    # an existing OUT: refused, untouched
    assert main([*argv, "--seeds", "0", "1"]) == 2
    assert "already exists" in _one_error_line(capfd)
    assert _listing(out) == files

    # --resume: the cached graphs and the scores of seed 0 are reused, only seed 1 runs
    assert main([*argv, "--seeds", "0", "1", "--resume"]) == 0
    stdout = capfd.readouterr().out
    assert f"reusing graphs from {out / 'graphs.h5mu'}" in stdout
    assert "building co-expression graphs" not in stdout
    assert "pca seed 1:" in stdout and "pca seed 0:" not in stdout
    assert (out / "graphs.h5mu").read_bytes() == files["graphs.h5mu"]
    scores = pd.read_csv(out / "scores.csv")
    assert sorted(scores["seed"]) == [0, 1]
    first_row = pd.read_csv(io.StringIO(files["scores.csv"].decode()))
    pd.testing.assert_frame_equal(scores[scores["seed"] == 0].reset_index(drop=True), first_row)

    # --overwrite: the benchmark's files are replaced (graphs rebuilt, old scores dropped); other files are kept
    (out / "notes.txt").write_text("mine")
    (out / "embeddings").mkdir()
    (out / "embeddings" / "stale_seed9.h5ad").write_text("old")
    assert main([*argv, "--seeds", "2", "--n-top-genes", "30", "--overwrite"]) == 0
    stdout = capfd.readouterr().out
    assert "reusing graphs" not in stdout and "building co-expression graphs" in stdout
    assert sorted(pd.read_csv(out / "scores.csv")["seed"]) == [2]
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "embeddings").exists()
    assert pd.read_csv(out / "summary.csv").shape[0] == 1


def test_resume_makes_a_missing_out_and_q_is_quiet(collection, tmp_path, capfd):
    out = tmp_path / "new"
    argv = ["benchmark", "--collection", str(collection), "--out", str(out), "--seeds", "0", "--resume", "-q", *FAST]
    assert main(argv) == 0
    assert (out / "scores.csv").is_file()
    assert capfd.readouterr().out == ""  # -q: no progress lines, no table


def test_console_script_out_of_process(tmp_path):
    """``python -m musegnn_sc.cli`` (the module as ``__main__``): still one line and exit status 2."""
    missing = tmp_path / "nope.h5mu"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "musegnn_sc.cli",
            "benchmark",
            "--collection",
            str(missing),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(msg.__file__).resolve().parents[1])},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"musegnn-sc: error: collection {str(missing)!r} does not exist: check the path "
        f"(relative paths start at {os.getcwd()!r})."
    ]
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------------------------------
# the library: run_benchmark's errors name the file and say what is wrong, before anything is written
# ---------------------------------------------------------------------------------------------------------------------
def test_runner_collection_errors_name_the_file(collection, tmp_path):
    out = tmp_path / "out"
    missing = tmp_path / "missing.h5mu"
    with pytest.raises(FileNotFoundError, match=r"'.*missing\.h5mu' does not exist"):
        run_benchmark(missing, methods=["pca"], out_dir=out, progress=None)
    h5ad = tmp_path / "one.h5ad"
    h5ad.write_bytes(b"")
    with pytest.raises(ValueError, match=r"'.*one\.h5ad' is not an \.h5mu file \(an \.h5ad holds one dataset"):
        run_benchmark(h5ad, methods=["pca"], out_dir=out, progress=None)
    csv = tmp_path / "table.csv"
    csv.write_text("a,b\n")
    with pytest.raises(ValueError, match=r"'.*table\.csv' is not an \.h5mu file"):
        run_benchmark(csv, methods=["pca"], out_dir=out, progress=None)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        run_benchmark(tmp_path, methods=["pca"], out_dir=out, progress=None)
    broken = tmp_path / "broken.h5mu"
    broken.write_text("not hdf5")
    with pytest.raises(ValueError, match=r"'.*broken\.h5mu' cannot be read as an \.h5mu file"):
        run_benchmark(broken, methods=["pca"], out_dir=out, progress=None)
    assert not out.exists(), "a bad collection must leave no output folder behind"


def test_find_shared_data_looks_only_in_data_dir(tmp_path, monkeypatch):
    """An explicit folder is the only one searched (a typo never falls back to another copy)."""
    good = tmp_path / "good"
    (good / "scrna").mkdir(parents=True)
    (good / _runner.SHARED_COLLECTION["rna_pbmc_10k"]["path"]).write_bytes(b"")
    monkeypatch.setenv("MUSEGNN_SC_DATA", str(good))
    assert _runner.find_shared_data() == good.resolve()
    with pytest.raises(FileNotFoundError, match="elsewhere") as exc:
        _runner.find_shared_data(tmp_path / "elsewhere")
    assert str(good) not in str(exc.value)
