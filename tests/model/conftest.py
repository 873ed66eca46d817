"""Fixtures of the model tests: small MuData of co-expression graphs with planted cross-dataset gene modules."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import sparse


def planted_mudata(
    *,
    n_datasets: int = 3,
    n_modules: int = 4,
    genes_per_module: int = 25,
    genes_per_dataset: int = 80,
    extra_genes: int = 5,
    p_in: float = 0.5,
    p_out: float = 0.04,
    n_features: int = 16,
    omics=None,
    seed: int = 0,
):
    """MuData whose modalities hold graphs in the layout of `msg.pp.build_coexpression_graph` (graph_contract.md).

    Every dataset draws `genes_per_dataset` genes from a universe of `n_modules * genes_per_module` genes; genes of the
    same module are connected with probability `p_in`, others with `p_out`. Node features are the module's direction
    (random per dataset: datasets' feature spaces are unrelated, as different cells are) plus noise. Each modality has
    `extra_genes` genes outside the graph.
    """
    import anndata as ad
    import mudata as md

    rng = np.random.default_rng(seed)
    n_univ = n_modules * genes_per_module
    module_of = np.repeat(np.arange(n_modules), genes_per_module)
    universe = np.array([f"G{k:03d}" for k in range(n_univ)])
    omics = omics or ["rna"] * n_datasets
    mods = {}
    for d in range(n_datasets):
        idx = np.sort(rng.choice(n_univ, size=genes_per_dataset, replace=False))
        m = module_of[idx]
        same = m[:, None] == m[None, :]
        prob = np.where(same, p_in, p_out)
        upper = np.triu(rng.random((len(idx), len(idx))) < prob, k=1)
        adj = upper | upper.T
        np.fill_diagonal(adj, True)
        centres = rng.standard_normal((n_modules, n_features))
        feats = centres[m] + 0.7 * rng.standard_normal((len(idx), n_features))
        n_vars = genes_per_dataset + extra_genes
        names = np.concatenate([universe[idx], [f"X{d}_{k}" for k in range(extra_genes)]])
        order = rng.permutation(n_vars)  # graph genes are not a prefix of var
        names = names[order]
        in_graph = order < genes_per_dataset
        full_adj = np.zeros((n_vars, n_vars), dtype=np.float32)
        pos = np.argsort(order)[:genes_per_dataset]  # var position of graph gene k
        full_adj[np.ix_(pos, pos)] = adj
        full_feat = np.zeros((n_vars, n_features), dtype=np.float32)
        full_feat[pos] = feats
        a = ad.AnnData(X=np.zeros((20, n_vars), dtype=np.float32))
        a.obs_names = [f"d{d}_c{k}" for k in range(20)]
        a.var_names = names
        a.var["coexpression_gene"] = in_graph
        a.var["module"] = np.where(in_graph, 0, -1)
        a.var.loc[in_graph, "module"] = module_of[idx][order[in_graph]]
        a.varp["coexpression_connectivities"] = sparse.csr_matrix(full_adj)
        a.varp["coexpression_correlation"] = sparse.csr_matrix(full_adj * 0.5)
        a.varm["coexpression_features"] = full_feat
        a.uns["coexpression"] = {
            "connectivities_key": "coexpression_connectivities",
            "correlation_key": "coexpression_correlation",
            "features_key": "coexpression_features",
            "gene_key": "coexpression_gene",
            "omics": omics[d],
            "tissue": "blood",
            "species": "human",
            "n_genes": genes_per_dataset,
            "n_edges": int(adj.sum()),
            "density": float(adj.mean()),
            "params": {"pval_cutoff": 0.005},
        }
        mods[f"{omics[d]}_{d}"] = a
    # Unpaired datasets share gene names by design, which MuData reports as non-unique var_names.
    with md.set_options(pull_on_update=False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="var_names are not unique")
        return md.MuData(mods)


@pytest.fixture(scope="session")
def make_planted():
    """The :func:`planted_mudata` builder (test modules cannot import conftest with ``--import-mode=importlib``)."""
    return planted_mudata


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # The graphs of these tests are tiny: thread start-up would cost more than the work, and the suite shares 2 cores.
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
