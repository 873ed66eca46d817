"""workflow/Snakefile runs the command line end to end: one graphs job per dataset, train, modules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import pandas as pd
import pytest

import musegnn_sc as msg

SNAKEFILE = Path(__file__).resolve().parents[1] / "workflow" / "Snakefile"

pytest.importorskip("snakemake", reason="the workflow test needs snakemake (the `workflow` or `test` extra)")


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    src = str(Path(msg.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--configfile", "config.yaml", *args]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)


@pytest.mark.slow
def test_snakefile_runs_graphs_train_modules(tmp_path):
    mdata = msg.datasets.toy_mudata(
        n_cells=60,
        n_genes=80,
        n_modules=3,
        module_size=10,
        n_rna=2,
        include_mouse=False,
        include_atac=False,
        include_spatial=False,
    )
    (tmp_path / "data").mkdir()
    for name, adata in mdata.mod.items():
        adata.write_h5ad(tmp_path / "data" / f"{name}.h5ad")
    (tmp_path / "datasets.yaml").write_text(
        "datasets:\n"
        "  - path: data/rna_heart_1.h5ad\n    name: heart\n    tissue: heart\n    species: human\n"
        "  - path: data/rna_heart_2.h5ad\n    tissue: heart\n"
    )
    (tmp_path / "config.yaml").write_text(
        "collection: datasets.yaml\n"
        "results: out\n"
        f"command: {sys.executable} -m musegnn_sc.cli\n"
        "graphs: {n_top_genes: 30, n_features: 8}\n"
        "train: {epochs: 2, seed: 1}\n"
        "modules: {n_neighbors: 8}\n"
        "threads: {graphs: 1, train: 1}\n"
    )
    proc = _snakemake(tmp_path, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "out"
    for name in ("heart", "rna_heart_2"):
        graph = ad.read_h5ad(out / "graphs" / f"{name}.h5ad")
        assert graph.uns["coexpression"]["tissue"] == "heart"
        assert int(graph.var["coexpression_gene"].sum()) == 30
    genes = ad.read_h5ad(out / "gene_embeddings.h5ad")
    assert list(genes.obs["dataset"].cat.categories) == ["heart", "rna_heart_2"]
    assert (out / "model" / "model.pt").is_file()
    membership = pd.read_csv(out / "modules" / "modules.tsv", sep="\t", index_col=0)
    assert list(membership.index) == list(genes.obs_names)
    assert (out / "modules" / "umap.png").is_file()
    # nothing left to do on a second run
    again = _snakemake(tmp_path, "--cores", "1", "--dry-run")
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr
