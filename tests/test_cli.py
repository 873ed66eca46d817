"""The ``musegnn-sc`` command line, end to end on simulated ``.h5ad`` files, and every way a user can get it wrong."""

from __future__ import annotations

import argparse
import hashlib
import inspect
import logging
import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest

import musegnn_sc as msg
from musegnn_sc import cli
from musegnn_sc._logging import logger
from musegnn_sc.cli import main

NAMES = ("rna_heart_1", "rna_heart_2", "rna_lung_1")
GRAPH_OPTS = ["--n-top-genes", "50", "--n-features", "16", "--n-jobs", "1"]
PNG = b"\x89PNG\r\n\x1a\n"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _toy():
    return msg.datasets.toy_mudata(
        n_cells=80,
        n_genes=100,
        n_modules=4,
        module_size=12,
        include_mouse=False,
        include_atac=False,
        include_spatial=False,
    )


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Raw .h5ad files -> `graphs` per file -> `train` -> `modules`, all in-process; paths and input hashes."""
    root = tmp_path_factory.mktemp("cli")
    mdata = _toy()
    raw = {}
    for name in NAMES:
        raw[name] = root / "data" / f"{name}.h5ad"
        raw[name].parent.mkdir(exist_ok=True)
        mdata.mod[name].write_h5ad(raw[name])
    genes = mdata.uns["toy_truth"]["genes"]
    gmt = root / "planted.gmt"
    with gmt.open("w") as fh:
        for module, group in genes[genes["module"] != "none"].groupby("module", observed=True):
            fh.write("\t".join([module, "planted", *sorted(set(group["gene"].astype(str)))]) + "\n")
    inputs = [*raw.values(), gmt]
    before = {p: _sha(p) for p in inputs}
    graphs = {n: root / "graphs" / f"{n}.h5ad" for n in NAMES}
    for name in NAMES:
        assert main(["-q", "graphs", str(raw[name]), "-o", str(graphs[name]), *GRAPH_OPTS]) == 0
    before.update({p: _sha(p) for p in graphs.values()})
    model, emb = root / "model", root / "genes.h5ad"
    assert (
        main(["train", *map(str, graphs.values()), "-o", str(model), "--embeddings", str(emb), "-q", "--epochs", "3"])
        == 0
    )
    modules = root / "modules"
    assert main(["modules", str(emb), "--gmt", str(gmt), "-o", str(modules), "-q", "--n-neighbors", "10"]) == 0
    return {
        "root": root,
        "mdata": mdata,
        "raw": raw,
        "gmt": gmt,
        "graphs": graphs,
        "model": model,
        "emb": emb,
        "modules": modules,
        "hashes": before,
    }


# ------------------------------------------------------------------------------------------------ the pipeline
def test_graphs_equal_the_python_api(pipeline):
    name = NAMES[0]
    out = ad.read_h5ad(pipeline["graphs"][name])
    expected = ad.read_h5ad(pipeline["raw"][name])
    msg.pp.build_coexpression_graph(expected, n_top_genes=50, n_features=16)
    assert out.shape == expected.shape
    assert (out.var_names == expected.var_names).all()
    diff = out.varp["coexpression_connectivities"] != expected.varp["coexpression_connectivities"]
    assert diff.nnz == 0
    np.testing.assert_allclose(out.varm["coexpression_features"], expected.varm["coexpression_features"], atol=1e-5)
    assert out.uns["coexpression"]["tissue"] == expected.uns["tissue"]
    assert out.uns["coexpression"]["n_genes"] == 50


def test_train_writes_a_loadable_model_and_its_embeddings(pipeline):
    from musegnn_sc.model import MuSeGNN

    model_dir = pipeline["model"]
    assert sorted(p.name for p in model_dir.iterdir()) == sorted(["model.pt", cli.EMBEDDINGS_FILE, cli.HISTORY_FILE])
    model = MuSeGNN.load(model_dir)
    assert [g.name for g in model.graphs] == list(NAMES)  # one dataset per file, named after the file
    assert model.is_trained_ and len(model.history) == 3
    inside = ad.read_h5ad(model_dir / cli.EMBEDDINGS_FILE)
    outside = ad.read_h5ad(pipeline["emb"])
    reloaded = model.get_gene_embeddings()
    np.testing.assert_array_equal(inside.obsm["X_musegnn"], reloaded.obsm["X_musegnn"])
    np.testing.assert_array_equal(outside.obsm["X_musegnn"], inside.obsm["X_musegnn"])
    assert inside.n_obs == 3 * 50
    assert set(inside.obs["tissue"]) == {"heart", "lung"}
    history = pd.read_csv(model_dir / cli.HISTORY_FILE, sep="\t", index_col=0)
    np.testing.assert_allclose(history["loss"].to_numpy(), model.history["loss"].to_numpy())
    assert not any(p.name.startswith(".") for p in pipeline["root"].iterdir()), "a temporary file was left behind"


def test_modules_writes_tables_figures_and_annotated_embeddings(pipeline):
    out = pipeline["modules"]
    expected = {"modules.tsv", "module_summary.tsv", "umap.png", "enrichment.tsv", "gene_modules.h5ad"}
    assert expected <= {p.name for p in out.iterdir()}
    gdata = ad.read_h5ad(out / "gene_modules.h5ad")
    membership = pd.read_csv(out / "modules.tsv", sep="\t", index_col=0, dtype={"module": str})
    assert list(membership.index) == list(gdata.obs_names)
    assert (membership["module"] == gdata.obs["leiden"].astype(str)).all()
    assert gdata.obsm["X_umap"].shape == (gdata.n_obs, 2)
    summary = pd.read_csv(out / "module_summary.tsv", sep="\t", index_col=0)
    assert summary["n_genes"].sum() == gdata.n_obs
    enr = pd.read_csv(out / "enrichment.tsv", sep="\t", dtype={"module": str})
    assert set(enr["term"]) <= {"M1", "M2", "M3", "M4"}
    assert ((enr["pval"] >= 0) & (enr["pval"] <= 1) & (enr["n_overlap"] <= enr["n_module"])).all()
    assert set(enr["module"]) <= set(membership["module"])
    assert (out / "umap.png").read_bytes()[:8] == PNG
    if (out / "enrichment.png").exists():
        assert (out / "enrichment.png").read_bytes()[:8] == PNG


def test_inputs_are_untouched(pipeline):
    for path, digest in pipeline["hashes"].items():
        assert _sha(path) == digest, f"{path} was modified"


# ------------------------------------------------------------------------------------------------ train inputs
def test_collection_files_toml_and_yaml_agree(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "c.toml").write_text(
        '[[datasets]]\nname = "a"\npath = "sub/x.h5ad"\nomics = "rna"\ntissue = "heart"\n\n'
        '[[datasets]]\npath = "/abs/lung.h5ad"\nspecies = "mouse"\nlayer = "counts"\n'
    )
    (tmp_path / "c.yaml").write_text(
        "datasets:\n  - name: a\n    path: sub/x.h5ad\n    omics: rna\n    tissue: heart\n"
        "  - path: /abs/lung.h5ad\n    species: mouse\n    layer: counts\n"
    )
    (tmp_path / "list.yml").write_text("- name: a\n  path: sub/x.h5ad\n- path: /abs/lung.h5ad\n")
    toml = cli.read_collection(tmp_path / "c.toml")
    assert toml == [
        cli.DatasetEntry("a", tmp_path / "sub" / "x.h5ad", omics="rna", tissue="heart"),
        cli.DatasetEntry("lung", Path("/abs/lung.h5ad"), species="mouse", layer="counts"),
    ]
    assert cli.read_collection(tmp_path / "c.yaml") == toml
    assert [e.name for e in cli.read_collection(tmp_path / "list.yml")] == ["a", "lung"]


def test_train_reads_a_collection_file(pipeline, tmp_path):
    graphs = pipeline["graphs"]
    entries = [("heart_a", graphs["rna_heart_1"], "heart"), ("lung_a", graphs["rna_lung_1"], "lung")]
    file = tmp_path / "collection.yaml"
    file.write_text(
        "datasets:\n"
        + "".join(f"  - name: {n}\n    path: {os.path.relpath(p, tmp_path)}\n    tissue: {t}\n" for n, p, t in entries)
    )
    model = tmp_path / "model"
    assert main(["train", str(file), "-o", str(model), "-q", "--epochs", "1"]) == 0
    gdata = ad.read_h5ad(model / cli.EMBEDDINGS_FILE)
    assert list(gdata.obs["dataset"].cat.categories) == ["heart_a", "lung_a"]
    assert dict(zip(gdata.obs["dataset"], gdata.obs["tissue"], strict=True)) == {"heart_a": "heart", "lung_a": "lung"}


def test_train_reads_h5mu_and_h5ad_together(pipeline, tmp_path):
    mods = {n: ad.read_h5ad(pipeline["graphs"][n]) for n in NAMES[:2]}
    with md.set_options(pull_on_update=False):
        md.MuData(mods, axis=1).write(tmp_path / "two.h5mu")
    model = tmp_path / "model"
    args = ["train", str(tmp_path / "two.h5mu"), str(pipeline["graphs"]["rna_lung_1"]), "-o", str(model)]
    assert main([*args, "-q", "--epochs", "1"]) == 0
    assert list(ad.read_h5ad(model / cli.EMBEDDINGS_FILE).obs["dataset"].cat.categories) == list(NAMES)


def test_collection_descriptors_must_agree_with_the_graph(pipeline, tmp_path, capfd):
    file = tmp_path / "c.yaml"
    file.write_text(f"datasets:\n  - path: {pipeline['graphs']['rna_heart_1']}\n    tissue: lung\n")
    capfd.readouterr()
    assert main(["train", str(file), "-o", str(tmp_path / "m")]) == 2
    err = capfd.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "tissue 'lung'" in err and "tissue 'heart'" in err and "--tissue lung" in err
    assert not (tmp_path / "m").exists()


def test_collection_fills_unknown_descriptors():
    adata = ad.AnnData(np.zeros((2, 2)), uns={"coexpression": {"omics": "rna", "tissue": "unknown"}})
    entry = cli.DatasetEntry(name="x", path=Path("x.h5ad"), tissue="lung", species="mouse")
    cli._check_graph(adata, "x", Path("x.h5ad"), entry)
    assert adata.uns["coexpression"]["tissue"] == "lung"
    assert adata.uns["coexpression"]["species"] == "mouse"


def test_graphs_of_an_h5mu(pipeline, tmp_path):
    mods = {n: ad.read_h5ad(pipeline["raw"][n]) for n in NAMES[:2]}
    with md.set_options(pull_on_update=False):
        md.MuData(mods, axis=1).write(tmp_path / "raw.h5mu")
    out = tmp_path / "graphs.h5mu"
    opts = [*GRAPH_OPTS, "--species", "human", "--correction", "fdr_bh"]
    assert main(["-q", "graphs", str(tmp_path / "raw.h5mu"), "-o", str(out), *opts]) == 0
    mdata = md.read_h5mu(out)
    assert list(mdata.mod) == list(NAMES[:2])
    for mod in mdata.mod.values():
        assert mod.uns["coexpression"]["params"]["correction"] == "fdr_bh"
        assert int(mod.var["coexpression_gene"].sum()) == 50


@pytest.mark.skipif(
    "gene_symbols" not in inspect.signature(msg.pp.build_coexpression_graph).parameters,
    reason="the graph builder of this branch has no `gene_symbols`",
)
def test_graphs_gene_symbols(pipeline, tmp_path):
    adata = ad.read_h5ad(pipeline["raw"]["rna_heart_1"])
    adata.var["symbol"] = adata.var_names.astype(str)
    adata.var_names = [f"ENSG{i:011d}" for i in range(adata.n_vars)]
    adata.write_h5ad(tmp_path / "ids.h5ad")
    assert (
        main(
            [
                "-q",
                "graphs",
                str(tmp_path / "ids.h5ad"),
                "-o",
                str(tmp_path / "g.h5ad"),
                *GRAPH_OPTS,
                "--gene-symbols",
                "symbol",
            ]
        )
        == 0
    )
    graph = ad.read_h5ad(tmp_path / "g.h5ad")
    assert graph.uns["coexpression"]["gene_symbols"] == "symbol"
    assert list(graph.var_names) == list(adata.var_names)  # the IDs stay; nodes are named by symbol


def test_graphs_device(tmp_path, monkeypatch, capfd):
    """``--device cpu`` runs CS-CORE in torch (same graph, device recorded); CUDA where there is none: one line."""
    torch = pytest.importorskip("torch")
    raw = tmp_path / "raw.h5ad"
    _toy().mod[NAMES[0]].write_h5ad(raw)
    assert main(["-q", "graphs", str(raw), "-o", str(tmp_path / "cpu.h5ad"), *GRAPH_OPTS, "--device", "cpu"]) == 0
    out = ad.read_h5ad(tmp_path / "cpu.h5ad")
    expected = ad.read_h5ad(raw)
    msg.pp.build_coexpression_graph(expected, n_top_genes=50, n_features=16)
    assert (out.varp["coexpression_connectivities"] != expected.varp["coexpression_connectivities"]).nnz == 0
    assert out.uns["coexpression"]["params"]["device"] == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    capfd.readouterr()
    assert main(["graphs", str(raw), "-o", str(tmp_path / "gpu.h5ad"), *GRAPH_OPTS, "--device", "cuda"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device cuda but CUDA is not available" in err[0] and "no --device" in err[0]
    assert not (tmp_path / "gpu.h5ad").exists()


# ------------------------------------------------------------------------------------------------ bad inputs
def _bad_inputs(p: dict, tmp: Path) -> dict:
    """name -> (argv, text the one-line message must contain)."""
    graph = str(p["graphs"]["rna_heart_1"])
    raw = str(p["raw"]["rna_heart_1"])
    text = tmp / "counts.csv"
    text.write_text("gene,cell1\nA,1\n")
    binary = tmp / "junk.h5ad"
    binary.write_bytes(bytes(range(256)) * 4)
    truncated = tmp / "truncated.h5ad"
    truncated.write_bytes(Path(raw).read_bytes()[:4096])
    misnamed = tmp / "anndata.h5mu"
    misnamed.write_bytes(Path(raw).read_bytes())
    mu = tmp / "two.h5mu"
    with md.set_options(pull_on_update=False):
        md.MuData({"a": ad.read_h5ad(raw)}, axis=1).write(mu)
    existing = tmp / "exists.h5ad"
    existing.write_bytes(b"keep me")
    bad_gmt = tmp / "sets.gmt"
    bad_gmt.write_text("just one field\n")
    unknown_key = tmp / "c.toml"
    unknown_key.write_text(f'[[datasets]]\npath = "{graph}"\ntisue = "heart"\n')
    no_path = tmp / "c.yaml"
    no_path.write_text("datasets:\n  - name: x\n")
    broken = tmp / "broken.yaml"
    broken.write_text("datasets: [\n")
    wrong_tissue = tmp / "tissue.yaml"
    wrong_tissue.write_text(f"datasets:\n  - path: {graph}\n    tissue: lung\n")
    clash = tmp / "clash.yaml"
    clash.write_text(f"datasets:\n  - path: {graph}\n    name: {NAMES[1]}\n")
    a_file = tmp / "a_file.txt"
    a_file.write_text("not a directory")
    model = str(p["model"])  # trained on the three graphs: every query named after its file clashes
    two = [graph, str(p["graphs"]["rna_lung_1"])]
    (tmp / "demo").mkdir()
    out = str(tmp / "out.h5ad")
    return {
        "demo output exists": (["demo", "--out", str(tmp / "demo")], "pass --overwrite"),
        "missing": (["graphs", str(tmp / "nope.h5ad"), "-o", out], "does not exist"),
        "directory": (["graphs", str(tmp), "-o", out], "is a directory"),
        "text file": (["graphs", str(text), "-o", out], "is a text file"),
        "not hdf5": (["graphs", str(binary), "-o", out], "not an HDF5 file"),
        "truncated": (["graphs", str(truncated), "-o", out], "truncated"),
        "h5ad named h5mu": (["graphs", str(misnamed), "-o", str(tmp / "o.h5mu")], "rename it to 'anndata.h5ad'"),
        "h5mu where h5ad expected": (["modules", str(mu), "-o", str(tmp / "m")], "this command reads .h5ad"),
        "wrong output suffix": (["graphs", raw, "-o", str(tmp / "o.h5mu")], "must end with .h5ad"),
        "output exists": (["graphs", raw, "-o", str(existing)], "pass --overwrite"),
        "output is input": (["graphs", raw, "-o", raw, "--overwrite"], "inputs are never written"),
        "model dir holds input": (["train", graph, "-o", str(Path(graph).parent), "--overwrite"], "contains the input"),
        "no graph": (["train", raw, "-o", str(tmp / "m")], "musegnn-sc graphs"),
        "map: no graph": (["map", raw, "--reference", model, "-o", str(tmp / "m")], "musegnn-sc graphs"),
        "collection tissue disagrees": (["train", str(wrong_tissue), "-o", str(tmp / "m")], "--tissue lung"),
        "query named like the reference": (
            ["map", graph, "--reference", model, "-o", str(tmp / "m")],
            "`name: rna_heart_1_query`",
        ),
        "query named like the reference, offloaded": (
            ["map", graph, "--reference", model, "-o", str(tmp / "m"), "--offload", "yes"],
            "`name: rna_heart_1_query`",
        ),
        "collection query named like the reference": (
            ["map", str(clash), "--reference", model, "-o", str(tmp / "m")],
            "change its `name` in the collection file",
        ),
        "graphs: no such layer": (["graphs", raw, "-o", out, "--layer", "nolayer"], "--layer 'nolayer'"),
        "graphs: no such var column": (["graphs", raw, "-o", out, "--gene-symbols", "nocol"], "--gene-symbols 'nocol'"),
        "graphs: sparkx without coordinates": (["graphs", raw, "-o", out, "--selection", "sparkx"], "obsm['spatial']"),
        "offload dir missing": (
            ["train", *two, "-o", str(tmp / "m"), "--offload-dir", str(tmp / "nodir")],
            "--offload-dir",
        ),
        "offload dir is a file": (["train", *two, "-o", str(tmp / "m"), "--offload-dir", str(a_file)], "is a file"),
        "offload no with a dir": (
            ["train", *two, "-o", str(tmp / "m"), "--offload", "no", "--offload-dir", str(tmp)],
            "drop one of them",
        ),
        "map: offload dir missing": (
            [
                "map",
                str(p["graphs"]["rna_lung_1"]),
                "--reference",
                model,
                "-o",
                str(tmp / "m"),
                "--offload-dir",
                "no/d",
            ],
            "--offload-dir 'no/d' does not exist",
        ),
        "same file twice": (["train", graph, graph, "-o", str(tmp / "m")], "given twice"),
        "resume without dir": (["train", graph, "-o", str(tmp / "m"), "--resume"], "--checkpoint-dir"),
        "checkpoints with ddp": (
            ["train", *two, "-o", str(tmp / "m"), "--strategy", "ddp", "--checkpoint-dir", str(tmp / "ck")],
            "--checkpoint-dir cannot be combined with --strategy 'ddp'",
        ),
        "unknown key": (["train", str(unknown_key), "-o", str(tmp / "m")], "unknown key(s) tisue"),
        "no path": (["train", str(no_path), "-o", str(tmp / "m")], "has no `path`"),
        "broken yaml": (["train", str(broken), "-o", str(tmp / "m")], "does not parse"),
        "no embedding": (["modules", raw, "-o", str(tmp / "m")], "obsm['X_musegnn']"),
        "bad gmt": (["modules", str(p["emb"]), "--gmt", str(bad_gmt), "-o", str(tmp / "m")], "tab-separated"),
        "missing gmt": (["modules", str(p["emb"]), "--gmt", str(tmp / "x.gmt"), "-o", str(tmp / "m")], "x.gmt"),
    }


BAD = [
    "demo output exists",
    "missing",
    "directory",
    "text file",
    "not hdf5",
    "truncated",
    "h5ad named h5mu",
    "h5mu where h5ad expected",
    "wrong output suffix",
    "output exists",
    "output is input",
    "model dir holds input",
    "no graph",
    "map: no graph",
    "collection tissue disagrees",
    "query named like the reference",
    "query named like the reference, offloaded",
    "collection query named like the reference",
    "graphs: no such layer",
    "graphs: no such var column",
    "graphs: sparkx without coordinates",
    "offload dir missing",
    "offload dir is a file",
    "offload no with a dir",
    "map: offload dir missing",
    "same file twice",
    "checkpoints with ddp",
    "resume without dir",
    "unknown key",
    "no path",
    "broken yaml",
    "no embedding",
    "bad gmt",
    "missing gmt",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_and_exit_2(pipeline, tmp_path, capfd, case):
    """At the default verbosity: one line on stderr, no progress line before it (``capfd``: what a terminal shows)."""
    argv, needle = _bad_inputs(pipeline, tmp_path)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    capfd.readouterr()
    assert main(argv) == 2
    captured = capfd.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("musegnn-sc: error: ")
    assert needle in lines[0]
    assert "Traceback" not in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "something was written"
    assert (tmp_path / "exists.h5ad").read_bytes() == b"keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_input(pipeline, tmp_path, capfd):
    f = tmp_path / "secret.h5ad"
    f.write_bytes(pipeline["raw"]["rna_heart_1"].read_bytes())
    f.chmod(0)
    capfd.readouterr()
    assert main(["graphs", str(f), "-o", str(tmp_path / "o.h5ad")]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "permission denied" in err[0]


def test_library_errors_are_one_line_and_v_shows_the_traceback(pipeline, tmp_path, capfd, monkeypatch):
    """An error the library raises once the work has started: one error line (after the progress lines, which -q
    hides); -v raises it with its traceback."""

    def fails(adata, **kwargs):
        raise KeyError("Layer 'counts' not found in `adata.layers` (available: none).")

    monkeypatch.setattr(msg.pp, "build_coexpression_graph", fails)
    argv = ["graphs", str(pipeline["raw"]["rna_heart_1"]), "-o", str(tmp_path / "o.h5ad")]
    capfd.readouterr()
    assert main([*argv, "-q"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("musegnn-sc: error: Layer 'counts' not found"), err
    assert main(argv) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert err[-1].startswith("musegnn-sc: error: ") and [line for line in err if "error" in line] == err[-1:]
    assert len(err) == 2 and "building the co-expression graph(s)" in err[0]  # the progress line, then the error
    with pytest.raises(KeyError, match="counts"):
        main([*argv, "-v"])
    assert not (tmp_path / "o.h5ad").exists()


def test_bad_option_values_are_usage_errors(pipeline, capsys):
    for argv in (
        ["graphs", "x.h5ad", "-o", "y.h5ad", "--n-top-genes", "0"],
        ["train", "x.h5ad", "-o", "m", "--devices", "a,b"],
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert "is not" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ overwrite
def test_overwrite_replaces_outputs_only_when_asked(pipeline, tmp_path, capsys):
    raw = str(pipeline["raw"]["rna_lung_1"])
    out = tmp_path / "g.h5ad"
    assert main(["-q", "graphs", raw, "-o", str(out), "--n-top-genes", "30", "--n-features", "8"]) == 0
    first = _sha(out)
    assert main(["-q", "graphs", raw, "-o", str(out), "--n-top-genes", "40", "--n-features", "8"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert _sha(out) == first
    assert main(["-q", "graphs", raw, "-o", str(out), "--n-top-genes", "40", "--n-features", "8", "--overwrite"]) == 0
    assert int(ad.read_h5ad(out).var["coexpression_gene"].sum()) == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.h5ad"]  # no temporary file left

    model = tmp_path / "model"
    model.mkdir()
    (model / "old.txt").write_text("x")
    graph = str(pipeline["graphs"]["rna_heart_1"])
    assert main(["train", graph, "-o", str(model), "-q", "--epochs", "1"]) == 2
    assert (model / "old.txt").exists()
    with pytest.warns(UserWarning, match="Only one dataset"):
        assert main(["train", graph, "-o", str(model), "-q", "--epochs", "1", "--overwrite"]) == 0
    assert sorted(p.name for p in model.iterdir()) == sorted(["model.pt", cli.EMBEDDINGS_FILE, cli.HISTORY_FILE])


def test_atomic_writes_leave_nothing_on_failure(tmp_path):
    target = tmp_path / "x.h5ad"
    with pytest.raises(RuntimeError), cli.atomic_file(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []
    folder = tmp_path / "dir"
    folder.mkdir()
    (folder / "keep").write_text("old")
    with pytest.raises(RuntimeError), cli.atomic_directory(folder) as tmp:
        (tmp / "new").write_text("new")
        raise RuntimeError
    assert [p.name for p in tmp_path.iterdir()] == ["dir"]
    assert [p.name for p in folder.iterdir()] == ["keep"]
    with cli.atomic_directory(folder) as tmp:
        (tmp / "new").write_text("new")
    assert [p.name for p in folder.iterdir()] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["dir"]


# ------------------------------------------------------------------------------------------------ help, verbosity
def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("verb", [None, "graphs", "train", "map", "modules", "demo", "benchmark"])
def test_help_documents_every_option_in_plain_text(verb, capsys):
    parser = cli.build_parser()
    target = parser if verb is None else _subparsers(parser)[verb]
    for action in target._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        assert action.help, f"{verb}: {action.option_strings or action.dest} has no help"
    with pytest.raises(SystemExit) as exc:
        main(["--help"] if verb is None else [verb, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for markup in ("``", ":func:", ":class:", ":meth:", ":mod:", ":data:"):
        assert markup not in text, f"reStructuredText {markup!r} in `{verb} --help`"


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.mark.parametrize(("flags", "shown"), [([], True), (["-q"], False), (["-v"], True)])
def test_cli_verbosity(pipeline, tmp_path, capsys, flags, shown):
    handler = _Records()
    logger.addHandler(handler)
    try:
        argv = ["graphs", str(pipeline["raw"]["rna_heart_2"]), "-o", str(tmp_path / "g.h5ad"), *GRAPH_OPTS]
        assert main([*argv, *flags]) == 0
    finally:
        logger.removeHandler(handler)
    info = [r.getMessage() for r in handler.records if r.levelno == logging.INFO]
    assert any("building the co-expression graph" in m for m in info) == shown
    assert ("Wrote" in capsys.readouterr().out) == shown
    assert logger.level == logging.NOTSET  # restored after the command


def test_logger_follows_scanpy_verbosity():
    import scanpy as sc

    before = sc.settings.verbosity
    try:
        for verbosity, info, warning in ((0, False, False), (1, False, True), (2, True, True), (3, True, True)):
            sc.settings.verbosity = verbosity
            assert logger.isEnabledFor(logging.INFO) == info
            assert logger.isEnabledFor(logging.WARNING) == warning
        sc.settings.verbosity = "info"
        assert logger.isEnabledFor(logging.INFO)
        logger.setLevel(logging.ERROR)  # an explicit level wins
        assert not logger.isEnabledFor(logging.WARNING)
    finally:
        logger.setLevel(logging.NOTSET)
        sc.settings.verbosity = before


def test_logger_does_not_import_scanpy():
    code = (
        "import sys, logging, musegnn_sc; from musegnn_sc._logging import logger;"
        "print('scanpy' in sys.modules, logger.getEffectiveLevel() == logging.WARNING)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]


def _console(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "musegnn_sc.cli", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(msg.__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"},
    )


def test_console_script_exit_status(tmp_path):
    """Out of process: exit status 2, one line on stderr, no traceback."""
    proc = _console("train", str(tmp_path / "nope.h5ad"), "-o", str(tmp_path / "m"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"musegnn-sc: error: input {str(tmp_path / 'nope.h5ad')!r} does not exist: check the path "
        f"(relative paths start at {os.getcwd()!r})."
    ]
    assert proc.stdout == ""


def test_console_script_checks_before_the_first_progress_line(pipeline, tmp_path):
    """The audit's case, out of process: a file without a graph was reported after `reading the graph(s) of ...`."""
    raw = str(pipeline["raw"]["rna_heart_1"])
    proc = _console("train", raw, "-o", str(tmp_path / "m"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("musegnn-sc: error: ") and "has no co-expression graph" in lines[0]
    assert proc.stdout == ""
    assert not (tmp_path / "m").exists()


def test_log_lines_go_to_the_current_stderr(capsys):
    """The package handler writes to `sys.stderr` as it is when a message is logged, not as it was at import."""
    import contextlib
    import io

    logger.setLevel(logging.INFO)
    try:
        buffer = io.StringIO()
        with contextlib.redirect_stderr(buffer):
            logger.info("to the redirected stderr")
        logger.info("to the captured stderr")
    finally:
        logger.setLevel(logging.NOTSET)
    assert buffer.getvalue() == "musegnn_sc: to the redirected stderr\n"
    assert capsys.readouterr().err == "musegnn_sc: to the captured stderr\n"


@pytest.mark.parametrize(
    ("flags", "cuda", "needle"),
    [
        (["--accelerator", "gpu"], 0, "--accelerator gpu but torch finds no CUDA GPU"),
        (["--accelerator", "cuda"], 0, "--accelerator cuda but torch finds no CUDA GPU"),
        (["--accelerator", "mps"], 0, "--accelerator mps but this machine has no Apple GPU"),
        (["--accelerator", "gpu", "--devices", "2"], 1, "--devices 2 asks for 2 GPUs but this machine has 1"),
        (["--accelerator", "cuda", "--devices", "0,3"], 2, "--devices 0,3 names GPUs this machine lacks"),
    ],
)
def test_hardware_the_machine_lacks_is_one_line(pipeline, tmp_path, capfd, monkeypatch, flags, cuda, needle):
    """Checked before any data are read: one line, no progress line (the audit found 5 lines, after the reading)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(cli, "_read_datasets", lambda *a, **k: pytest.fail("the data were read"))
    argv = ["train", str(pipeline["graphs"]["rna_heart_1"]), str(pipeline["graphs"]["rna_lung_1"])]
    capfd.readouterr()
    assert main([*argv, "-o", str(tmp_path / "m"), "--epochs", "1", *flags]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("musegnn-sc: error: ") and needle in err[0], err
    assert not (tmp_path / "m").exists()


def test_checkpoints_and_resume(pipeline, tmp_path):
    graphs = [str(pipeline["graphs"][n]) for n in NAMES[:2]]
    ckpt = tmp_path / "ckpt"
    common = ["-q", "--checkpoint-dir", str(ckpt), "--checkpoint-every", "1"]
    assert main(["train", *graphs, "-o", str(tmp_path / "m"), "--epochs", "2", *common]) == 0
    assert (ckpt / "last.ckpt").is_file()
    assert main(["train", *graphs, "-o", str(tmp_path / "m"), "--epochs", "4", "--resume", "--overwrite", *common]) == 0
    resumed = pd.read_csv(tmp_path / "m" / cli.HISTORY_FILE, sep="\t", index_col=0)
    assert list(resumed.index) == [0, 1, 2, 3]
    assert main(["train", *graphs, "-o", str(tmp_path / "straight"), "-q", "--epochs", "4"]) == 0
    straight = pd.read_csv(tmp_path / "straight" / cli.HISTORY_FILE, sep="\t", index_col=0)
    np.testing.assert_allclose(resumed.to_numpy(), straight.to_numpy(), rtol=1e-5)


def test_qq_silences_warnings(pipeline, tmp_path, capsys):
    graph = str(pipeline["graphs"]["rna_heart_1"])
    assert main(["train", graph, "-o", str(tmp_path / "m"), "-qq", "--epochs", "1"]) == 0  # one dataset: a warning
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


# ------------------------------------------------------------------------------------------------ map
@pytest.fixture(scope="module")
def mapped(pipeline):
    """A reference trained on two of the graphs, the third mapped into it with `map`."""
    root = pipeline["root"]
    ref, out, emb = root / "ref_model", root / "mapped_model", root / "mapped.h5ad"
    graphs = pipeline["graphs"]
    args = ["train", str(graphs[NAMES[0]]), str(graphs[NAMES[1]]), "-o", str(ref), "-q", "--epochs", "3"]
    assert main(args) == 0
    before = {p: _sha(p) for p in [graphs[NAMES[2]], ref / "model.pt"]}
    args = ["map", str(graphs[NAMES[2]]), "--reference", str(ref), "-o", str(out), "--embeddings", str(emb)]
    assert main([*args, "-q", "--epochs", "2"]) == 0
    return {"ref": ref, "out": out, "emb": emb, "hashes": before}


def test_map_keeps_the_reference_and_adds_the_query(mapped):
    from musegnn_sc.model import MuSeGNN

    reference, combined = MuSeGNN.load(mapped["ref"]), MuSeGNN.load(mapped["out"])
    assert [g.name for g in combined.graphs] == [*NAMES[:2], NAMES[2]]
    assert len(combined.history) == 2
    g_ref, g_all = reference.get_gene_embeddings(), ad.read_h5ad(mapped["emb"])
    assert set(g_all.obs["dataset"]) == set(NAMES)
    assert g_all.obs["reference"].sum() == g_ref.n_obs
    # the reference is frozen: its rows are the reference's embeddings, bit for bit
    rows = g_all[g_all.obs["reference"].to_numpy()]
    np.testing.assert_array_equal(rows.obsm["X_musegnn"], g_ref[rows.obs_names].obsm["X_musegnn"])
    for path, digest in mapped["hashes"].items():
        assert _sha(path) == digest, f"{path} was written"


@pytest.mark.parametrize("case", ["missing", "no_model", "output_is_reference"])
def test_map_bad_reference_is_one_line_and_exit_2(pipeline, mapped, tmp_path, capfd, case):
    query = str(pipeline["graphs"][NAMES[2]])
    if case == "missing":
        ref, out = tmp_path / "nope", tmp_path / "out"
    elif case == "no_model":
        ref, out = tmp_path, tmp_path.parent / f"{tmp_path.name}_out"
    else:
        ref = out = mapped["ref"]
    capfd.readouterr()
    code = main(["map", query, "--reference", str(ref), "-o", str(out), "--overwrite"])
    err = capfd.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("musegnn-sc: error:")
    assert str(ref) in err


# ------------------------------------------------------------------------------------------------ decoder cost options
def _precision_not_auto() -> str:
    """The explicit ``decoder_precision`` that ``'auto'`` would not choose on this CPU (so the test sees the option)."""
    import torch

    from musegnn_sc.model._precision import native_bfloat16

    return "float32" if native_bfloat16(torch.device("cpu")) else "bfloat16"


def test_help_shows_the_library_defaults_of_the_new_options():
    from musegnn_sc.model import MuSeGNN

    def default(func, name):
        return inspect.signature(func).parameters[name].default

    verbs = _subparsers(cli.build_parser())
    for verb in ("train", "map"):
        helps = {a.dest: a.help for a in verbs[verb]._actions}
        for dest in ("reconstruction_fraction", "decoder_precision"):
            if verb == "map" and dest == "reconstruction_fraction":
                # map_to_reference reuses the reference's fraction (tl._map._INHERITED), not the library default
                assert "(default: the reference's)" in helps[dest]
                continue
            assert f"(default: {default(MuSeGNN.train, dest)})" in helps[dest], (verb, dest)
    train_help = {a.dest: a.help for a in verbs["train"]._actions}
    assert f"(default: {default(msg.tl.train_musegnn, 'offload')})" in train_help["offload"]
    assert f"(default: {cli._library_default('max_epochs')})" in train_help["epochs"]  # not train_musegnn's None
    choices = {verb: next(a for a in verbs[verb]._actions if a.dest == "offload").choices for verb in ("train", "map")}
    assert choices == {"train": ["auto", "yes", "no"], "map": ["auto", "yes"]}


@pytest.fixture
def spy(monkeypatch):
    """Wrap ``msg.tl.train_musegnn`` and ``msg.tl.map_to_reference``: the keywords each got and the model it made."""
    calls: dict[str, tuple[dict, object]] = {}

    def wrap(name):
        real = getattr(msg.tl, name)

        def call(*args, **kwargs):
            gdata, model = real(*args, **kwargs)
            calls[name] = (kwargs, model)
            return gdata, model

        monkeypatch.setattr(msg.tl, name, call)

    wrap("train_musegnn")
    wrap("map_to_reference")
    return calls


def test_train_decoder_options_reach_the_model(pipeline, tmp_path, spy):
    from musegnn_sc.model import MuSeGNN

    precision = _precision_not_auto()
    graphs = [str(pipeline["graphs"][n]) for n in NAMES[:2]]
    off = tmp_path / "offload"
    off.mkdir()
    argv = ["train", *graphs, "-o", str(tmp_path / "m"), "-q", "--epochs", "1", "--reconstruction-fraction", "0.5"]
    assert main([*argv, "--decoder-precision", precision, "--offload", "yes", "--offload-dir", str(off)]) == 0
    kwargs, model = spy["train_musegnn"]
    assert kwargs["offload"] is True and kwargs["offload_dir"] == off
    assert model.module.offloaded and model.module.arena.directory == off
    assert list(off.iterdir()) == []  # the decoders' file is unlinked at once
    saved = MuSeGNN.load(tmp_path / "m").train_params_
    assert saved["reconstruction_fraction"] == 0.5 and saved["decoder_precision"] == precision

    assert main(["train", *graphs, "-o", str(tmp_path / "m2"), "-q", "--epochs", "1", "--offload", "no"]) == 0
    kwargs, model = spy["train_musegnn"]
    assert kwargs["offload"] is False and "offload_dir" not in kwargs and not model.module.offloaded
    assert "reconstruction_fraction" not in kwargs and "decoder_precision" not in kwargs  # the library's defaults


def test_offload_dir_unused_is_a_warning(pipeline, tmp_path, spy):
    graphs = [str(pipeline["graphs"][n]) for n in NAMES[:2]]
    argv = ["train", *graphs, "-o", str(tmp_path / "m"), "-q", "--epochs", "1", "--offload-dir", str(tmp_path)]
    with pytest.warns(UserWarning, match="--offload-dir .* was not used") as record:
        assert main(argv) == 0
    assert not any(
        "`offload_dir`" in str(w.message) for w in record
    )  # the library's Python-worded warning is not shown
    assert not spy["train_musegnn"][1].module.offloaded


def test_map_decoder_options_reach_the_model(pipeline, mapped, tmp_path, spy):
    from musegnn_sc.model import MuSeGNN

    precision = _precision_not_auto()
    off = tmp_path / "offload"
    off.mkdir()
    argv = ["map", str(pipeline["graphs"][NAMES[2]]), "--reference", str(mapped["ref"]), "-o", str(tmp_path / "m")]
    opts = ["--reconstruction-fraction", "0.5", "--decoder-precision", precision, "--offload", "yes"]
    assert main([*argv, "-q", "--epochs", "1", *opts, "--offload-dir", str(off)]) == 0
    kwargs, model = spy["map_to_reference"]
    assert kwargs["reconstruction_fraction"] == 0.5 and kwargs["decoder_precision"] == precision
    assert model.module.offloaded and model.module.arena.directory == off  # the reference was loaded offloaded
    saved = MuSeGNN.load(tmp_path / "m").train_params_
    assert saved["reconstruction_fraction"] == 0.5 and saved["decoder_precision"] == precision


@pytest.mark.parametrize(
    ("verb", "option", "value", "what"),
    [
        ("train", "--reconstruction-fraction", "0", "is not a number in (0, 1]"),
        ("train", "--reconstruction-fraction", "1.5", "is not a number in (0, 1]"),
        ("train", "--reconstruction-fraction", "half", "is not a number in (0, 1]"),
        ("train", "--decoder-precision", "float16", "invalid choice"),
        ("train", "--offload", "maybe", "invalid choice"),
        ("map", "--reconstruction-fraction", "-1", "is not a number in (0, 1]"),
        ("map", "--decoder-precision", "fp32", "invalid choice"),
        ("map", "--offload", "no", "invalid choice"),
    ],
)
def test_bad_decoder_option_values_are_usage_errors(tmp_path, capfd, verb, option, value, what):
    """As for every option value: argparse's usage, then one error line naming the option; exit status 2."""
    argv = [verb, "x.h5ad", "-o", str(tmp_path / "m"), option, value]
    if verb == "map":
        argv += ["--reference", str(tmp_path)]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1], err
    assert errors[0].startswith(f"musegnn-sc {verb}: error: argument {option}") and what in errors[0]
    assert not (tmp_path / "m").exists()
