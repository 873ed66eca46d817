"""End to end on the package's simulator: graphs from `msg.pp.build_coexpression_graphs`, then MuSe-GNN."""

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score

import musegnn_sc as msg
from musegnn_sc.model._model import MuSeGNN

EPOCHS = 40


def _unit(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _leiden(X, k=15):
    import igraph
    import leidenalg
    from sklearn.neighbors import NearestNeighbors

    _, idx = NearestNeighbors(n_neighbors=k, metric="cosine").fit(X).kneighbors(X)
    edges = sorted({(min(a, b), max(a, b)) for a, row in enumerate(idx) for b in row if a != b})
    part = leidenalg.find_partition(
        igraph.Graph(n=len(X), edges=edges), leidenalg.RBConfigurationVertexPartition, resolution_parameter=0.5, seed=0
    )
    return np.asarray(part.membership)


def _modules(mdata, gdata):
    truth = mdata.uns["toy_truth"]["genes"].set_index(["dataset", "gene"])["module"]
    return np.array([truth[(d, g)] for d, g in zip(gdata.obs["dataset"], gdata.obs["gene"], strict=True)])


def _same_vs_random(gdata):
    X = _unit(gdata.obsm["X_musegnn"])
    genes = gdata.obs["gene"].to_numpy()
    same = []
    for gene in np.unique(genes[gdata.obs["is_common"].to_numpy()]):
        idx = np.flatnonzero(genes == gene)
        same += [X[a] @ X[b] for n, a in enumerate(idx) for b in idx[n + 1 :]]
    a, b = np.random.default_rng(0).integers(len(X), size=(2, 5000))
    return float(np.mean(same)), float(np.mean((X[a] * X[b]).sum(1)))


@pytest.fixture(scope="module")
def toy():
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    mdata = msg.datasets.toy_mudata(include_mouse=False, n_cells=200, n_genes=300)
    msg.pp.build_coexpression_graphs(mdata, n_top_genes=200)
    model = MuSeGNN(mdata)
    with pytest.warns(UserWarning, match="not been trained"):
        before = model.get_gene_embeddings()
    # the authors' mean-reduced L_Sim and a 10x encoder rate: converged in 40 epochs on these 200-gene graphs
    model.train(max_epochs=EPOCHS, sim_reduction="mean", lr_encoder=1e-3, progress_bar=False)
    yield mdata, model, before, model.get_gene_embeddings()
    torch.set_num_threads(n_threads)


def test_every_loss_term_decreases_on_toy_data(toy):
    _, model, _, _ = toy
    first, last = model.history.iloc[:3].mean(), model.history.iloc[-3:].mean()
    for term in ("loss", "bce", "sim", "infonce"):
        assert last[term] < first[term], term


def test_common_genes_align_across_datasets_and_omics(toy):
    _, _, before, after = toy
    same, rand = _same_vs_random(after)
    same_before, _ = _same_vs_random(before)
    assert same > 0.9
    assert same > rand + 0.4
    assert same > same_before + 0.6


def test_leiden_recovers_planted_modules_better_than_pca_per_dataset(toy):
    mdata, _, _, after = toy
    truth = _modules(mdata, after)
    planted = truth != "none"
    pcs = np.vstack(
        [
            PCA(16, random_state=0).fit_transform(
                a.varm["coexpression_features"][a.var["coexpression_gene"].to_numpy()]
            )
            for a in mdata.mod.values()
        ]
    )
    ari_pca = adjusted_rand_score(truth[planted], _leiden(pcs[planted]))
    ari_model = adjusted_rand_score(truth[planted], _leiden(after.obsm["X_musegnn"][planted]))
    assert ari_model > 0.85
    assert ari_model > ari_pca + 0.5
