"""`evaluate` on an external embedding: edge AUC against each graph by gene name, the other metrics left out."""

from __future__ import annotations

import numpy as np
import pytest

import musegnn_sc as msg
from musegnn_sc.io._embedding import embedding_anndata
from musegnn_sc.tl._evaluate import edge_auc
from musegnn_sc.tl._pairs import expression_vectors


@pytest.fixture(scope="module")
def mdata():
    m = msg.datasets.toy_mudata(
        include_mouse=False, include_atac=False, include_spatial=False, n_rna=2, n_cells=150, n_genes=200
    )
    msg.pp.build_coexpression_graphs(m, n_top_genes=80)
    return m


def _genes(mdata):
    return np.unique(np.concatenate([a.var_names.to_numpy() for a in mdata.mod.values()]))


def test_expression_embedding_scores_edges_random_does_not(mdata):
    genes = _genes(mdata)[::2]  # half the genes: coverage below 1
    ext = embedding_anndata(genes, expression_vectors(mdata, genes, n_components=20), name="expr")
    with pytest.warns(UserWarning, match=r"ASW, GC, iLISI, CGR, NO left out"):
        scores = msg.tl.evaluate(ext, mdata)
    assert scores["AUC"] > 0.7
    assert scores.drop("AUC").isna().all()
    assert set(scores.attrs["left_out"]) == {"ASW", "GC", "iLISI", "CGR", "NO"}
    cov = scores.attrs["coverage"]
    assert set(cov) == set(mdata.mod) and all(0.3 < c < 0.7 for c in cov.values())
    # the per-graph AUC is the edge AUC of the covered subgraph, computed directly
    a = mdata.mod["rna_heart_1"]
    nodes = np.flatnonzero(a.var["coexpression_gene"].to_numpy())
    keep = nodes[np.isin(a.var_names[nodes], genes)]
    adj = a.varp["coexpression_connectivities"][keep][:, keep]
    vec = ext.obsm["X_musegnn"][np.searchsorted(genes, a.var_names[keep])]
    assert scores.attrs["auc_per_dataset"]["rna_heart_1"] == pytest.approx(edge_auc(vec, adj))

    noise = embedding_anndata(genes, np.random.default_rng(0).normal(size=(len(genes), 20)), name="noise")
    # no warning: nothing left out; the diagonal (cosine 1, always an edge) would lift a random embedding above 0.5
    rand = msg.tl.evaluate(noise, mdata, metrics=("AUC",), include_self_loops=False)
    assert abs(rand["AUC"] - 0.5) < 0.05
    assert rand.attrs["left_out"] == {}


def test_no_shared_gene_warns_with_the_cause(mdata):
    ids = [f"ENSG{k:011d}" for k in range(50)]
    ext = embedding_anndata(ids, np.random.default_rng(0).normal(size=(50, 4)), name="ens")
    with pytest.warns(UserWarning, match="identifier type"):
        scores = msg.tl.evaluate(ext, mdata, metrics=("AUC",))
    assert np.isnan(scores["AUC"])
