import signal

import anndata as ad
import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score

from musegnn_sc.model._losses import info_nce
from musegnn_sc.model._model import MuSeGNN
from musegnn_sc.model._pairs import neighbour_lists, pair_index, sample_contrastive

EPOCHS = 40
FAST = {"progress_bar": False, "lr_encoder": 1e-3}  # 10x the paper's encoder rate: the toy graphs converge in 40 epochs


def _small(make):
    return make(genes_per_dataset=60, genes_per_module=20)


def _modules(mdata):
    return np.concatenate([a.var.loc[a.var["coexpression_gene"], "module"].to_numpy() for a in mdata.mod.values()])


def _leiden(X, k=15):
    """Leiden clusters of the cosine k-NN graph (scanpy's recipe without its numba start-up cost)."""
    import igraph
    import leidenalg
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k, metric="cosine").fit(X)
    _, idx = nn.kneighbors(X)
    edges = {(min(a, b), max(a, b)) for a, row in enumerate(idx) for b in row if a != b}
    graph = igraph.Graph(n=len(X), edges=sorted(edges))
    part = leidenalg.find_partition(
        graph, leidenalg.RBConfigurationVertexPartition, resolution_parameter=0.5, seed=0, n_iterations=2
    )
    return np.asarray(part.membership)


def _unit(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _same_gene_cosine(gdata):
    X = _unit(gdata.obsm["X_musegnn"])
    genes = gdata.obs["gene"].to_numpy()
    cos = []
    for gene in np.unique(genes):
        idx = np.flatnonzero(genes == gene)
        cos += [X[a] @ X[b] for n, a in enumerate(idx) for b in idx[n + 1 :]]
    return float(np.mean(cos))


def _random_pair_cosine(gdata):
    X = _unit(gdata.obsm["X_musegnn"])
    rng = np.random.default_rng(0)
    a, b = rng.integers(len(X), size=(2, 3000))
    return float(np.mean((X[a] * X[b]).sum(1)))


def _partner_in_top_decile(gdata):
    """Fraction of (gene, other dataset) pairs where the gene's own row is among the 10% most similar rows there."""
    X = _unit(gdata.obsm["X_musegnn"])
    ds, genes = gdata.obs["dataset"].to_numpy(), gdata.obs["gene"].to_numpy()
    hits = []
    for a in np.unique(ds):
        for b in np.unique(ds):
            rows_b = np.flatnonzero(ds == b)
            where = {genes[k]: k for k in rows_b}
            for k in np.flatnonzero(ds == a):
                if a != b and genes[k] in where:
                    hits.append(np.mean(X[rows_b] @ X[k] > X[where[genes[k]]] @ X[k]) < 0.1)
    return float(np.mean(hits))


def _held_out_infonce(model):
    """InfoNCE of every different gene of every pair against a neighbour drawn by a fixed generator."""
    emb = {k: torch.from_numpy(v) for k, v in model.get_latent_representation().items()}
    rng = np.random.default_rng(123)
    out = []
    for gi in model.graphs:
        for gj in model.graphs:
            if gi is gj:
                continue
            p = pair_index(gi.genes, gi.adjacency, gj.genes, gj.adjacency)
            ai, pi = sample_contrastive(rng, p.diff_i, *neighbour_lists(gi.adjacency), 10_000)
            aj, pj = sample_contrastive(rng, p.diff_j, *neighbour_lists(gj.adjacency), 10_000)
            anchors = torch.cat([emb[gi.name][ai], emb[gj.name][aj]])
            positives = torch.cat([emb[gi.name][pi], emb[gj.name][pj]])
            out.append(float(info_nce(anchors, positives)))
    return float(np.mean(out))


@pytest.fixture(scope="module")
def trained(make_planted):
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    mdata = _small(make_planted)
    MuSeGNN.setup_mudata(mdata)
    model = MuSeGNN(mdata)
    with pytest.warns(UserWarning, match="not been trained"):
        before = model.get_gene_embeddings()
    model.train(max_epochs=EPOCHS, **FAST)
    yield mdata, model, before, model.get_gene_embeddings()
    torch.set_num_threads(n_threads)


def test_every_loss_term_decreases(trained):
    _, model, _, _ = trained
    hist = model.history
    assert list(hist.columns) == ["loss", "bce", "sim", "infonce"]
    assert list(hist.index) == list(range(EPOCHS))
    first, last = hist.iloc[:3].mean(), hist.iloc[-3:].mean()
    for term in ("loss", "bce", "sim", "infonce"):
        assert last[term] < first[term], term
    assert last["bce"] < 0.5 * first["bce"]


def test_same_gene_from_two_datasets_ends_close(trained):
    _, _, before, after = trained
    same, rand = _same_gene_cosine(after), _random_pair_cosine(after)
    assert same > 0.9, (same, rand)
    # the InfoNCE over common genes (default contrastive_anchors='all') keeps unrelated genes apart; the paper's
    # summed L_Sim reached same > 0.95 but only rand + 0.15 (see test_contrastive_anchors.py)
    assert same > rand + 0.3, (same, rand)
    assert same > _same_gene_cosine(before) + 0.5
    ranked, ranked_before = _partner_in_top_decile(after), _partner_in_top_decile(before)
    assert ranked > 0.85
    assert ranked > ranked_before + 0.6


def test_leiden_recovers_planted_cross_dataset_modules(trained):
    mdata, _, before, after = trained
    truth = _modules(mdata)
    baseline = np.vstack(
        [
            PCA(8, random_state=0).fit_transform(a.varm["coexpression_features"][a.var["coexpression_gene"].to_numpy()])
            for a in mdata.mod.values()
        ]
    )
    ari_pca = adjusted_rand_score(truth, _leiden(baseline))
    ari_model = adjusted_rand_score(truth, _leiden(after.obsm["X_musegnn"]))
    assert ari_model > 0.9
    assert ari_model > ari_pca + 0.4
    assert ari_model > adjusted_rand_score(truth, _leiden(before.obsm["X_musegnn"])) + 0.3


def test_ablations_change_the_result(trained):
    mdata, model, _, after = trained
    no_sim = MuSeGNN(mdata)
    # the default InfoNCE over common genes aligns copies as well: switch off both terms that tie datasets together
    no_sim.train(max_epochs=EPOCHS, lambda_sim=0, lambda_contrastive=0, **FAST)
    g = no_sim.get_gene_embeddings()
    assert (no_sim.history["sim"] == 0).all()
    # without them nothing aligns the datasets: the same gene is no closer than random pairs, modules split
    assert _same_gene_cosine(g) < _same_gene_cosine(after) - 0.4
    truth = _modules(mdata)
    assert adjusted_rand_score(truth, _leiden(g.obsm["X_musegnn"])) < 0.7

    no_nce = MuSeGNN(mdata)
    no_nce.train(max_epochs=EPOCHS, lambda_contrastive=0, **FAST)
    assert (no_nce.history["infonce"] == 0).all()
    diff = np.abs(no_nce.get_gene_embeddings().obsm["X_musegnn"] - after.obsm["X_musegnn"]).max()
    assert diff > 1e-3
    # genes absent from the partner end closer to their graph neighbours with the contrastive term
    assert _held_out_infonce(model) < _held_out_infonce(no_nce)


def test_gene_embeddings_layout(trained, tmp_path):
    mdata, model, _, gdata = trained
    n = sum(int(a.var["coexpression_gene"].sum()) for a in mdata.mod.values())
    assert gdata.shape == (n, 32)
    assert gdata.obsm["X_musegnn"].dtype == np.float32
    assert np.isfinite(gdata.obsm["X_musegnn"]).all()
    np.testing.assert_array_equal(gdata.X, gdata.obsm["X_musegnn"])
    assert list(gdata.obs.columns) == ["gene", "dataset", "omics", "tissue", "species", "is_common"]
    assert gdata.obs_names.is_unique
    first = gdata.obs.iloc[0]
    assert gdata.obs_names[0] == f"{first['dataset']}:{first['gene']}"
    sets = [set(a.var_names[a.var["coexpression_gene"].to_numpy()]) for a in mdata.mod.values()]
    common = set.intersection(*sets)
    assert gdata.obs["is_common"].to_numpy().tolist() == [g in common for g in gdata.obs["gene"]]
    assert 0 < gdata.obs["is_common"].sum() < n
    assert (gdata.obs["omics"] == "rna").all() and (gdata.obs["species"] == "human").all()
    uns = gdata.uns["musegnn"]
    assert uns["params"]["model"]["n_latent"] == 32
    assert uns["params"]["train"]["lr_encoder"] == pytest.approx(1e-3)
    np.testing.assert_allclose(uns["history"]["bce"], model.history["bce"].to_numpy())
    gdata.write_h5ad(tmp_path / "genes.h5ad")
    back = ad.read_h5ad(tmp_path / "genes.h5ad")
    np.testing.assert_array_equal(back.obsm["X_musegnn"], gdata.obsm["X_musegnn"])


def test_save_load_round_trip_is_bit_exact(trained, tmp_path, make_planted):
    mdata, model, _, gdata = trained
    path = tmp_path / "model"
    model.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # the temporary directory is gone
    with pytest.raises(FileExistsError, match="overwrite"):
        model.save(path)
    model.save(path, overwrite=True)
    for loaded in (MuSeGNN.load(path), MuSeGNN.load(path, mdata=mdata)):
        np.testing.assert_array_equal(loaded.get_gene_embeddings().obsm["X_musegnn"], gdata.obsm["X_musegnn"])
        pd.testing.assert_frame_equal(loaded.history, model.history)
        assert loaded.is_trained_ and repr(loaded) == repr(model)
    other = _small(make_planted)
    other.mod["rna_1"].var_names = [f"Z{k}" for k in range(other.mod["rna_1"].n_vars)]
    with pytest.raises(ValueError, match="does not match"):
        MuSeGNN.load(path, mdata=other)
    with pytest.raises(FileNotFoundError, match="MuSeGNN.save"):
        MuSeGNN.load(tmp_path / "nothing")


def test_same_seed_gives_identical_embeddings(make_planted):
    mdata = _small(make_planted)
    runs = []
    for seed in (0, 0, 1):
        model = MuSeGNN(mdata, seed=seed)
        model.train(max_epochs=3, seed=seed, **FAST)
        runs.append(model.get_gene_embeddings().obsm["X_musegnn"])
    np.testing.assert_array_equal(runs[0], runs[1])
    assert np.abs(runs[0] - runs[2]).max() > 1e-3


def test_training_seed_alone_changes_the_draws(make_planted):
    mdata = _small(make_planted)
    a, b = MuSeGNN(mdata), MuSeGNN(mdata)
    a.train(max_epochs=2, seed=0, **FAST)
    b.train(max_epochs=2, seed=5, **FAST)
    assert not np.array_equal(a.history["sim"].to_numpy(), b.history["sim"].to_numpy())


def test_resume_equals_an_uninterrupted_run(tmp_path, make_planted):
    mdata = _small(make_planted)
    straight = MuSeGNN(mdata)
    straight.train(max_epochs=4, **FAST)
    first = MuSeGNN(mdata)
    first.train(max_epochs=2, checkpoint_dir=tmp_path, checkpoint_every=1, **FAST)
    assert (tmp_path / "last.ckpt").exists()
    resumed = MuSeGNN(mdata)
    resumed.train(max_epochs=4, checkpoint_dir=tmp_path, resume=True, **FAST)
    pd.testing.assert_frame_equal(resumed.history, straight.history)
    np.testing.assert_array_equal(
        resumed.get_gene_embeddings().obsm["X_musegnn"], straight.get_gene_embeddings().obsm["X_musegnn"]
    )
    with pytest.raises(ValueError, match="checkpoint_dir"):
        resumed.train(max_epochs=1, resume=True)


def test_training_again_continues_the_history(make_planted):
    mdata = _small(make_planted)
    model = MuSeGNN(mdata)
    model.train(max_epochs=2, **FAST)
    model.train(max_epochs=3, **FAST)
    assert list(model.history.index) == [0, 1, 2, 3, 4]


class _Interrupt(pl.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 2:
            raise KeyboardInterrupt


class _Poison(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 2 and batch_idx == 1:
            with torch.no_grad():
                next(pl_module.module.encoders[1].parameters()).fill_(float("nan"))


def test_ctrl_c_leaves_a_usable_model_with_its_history(make_planted):
    mdata = _small(make_planted)
    handler = signal.getsignal(signal.SIGINT)
    model = MuSeGNN(mdata)
    with pytest.warns(UserWarning, match="interrupted after 2 complete epoch"):
        model.train(max_epochs=10, callbacks=[_Interrupt()], **FAST)
    assert signal.getsignal(signal.SIGINT) is handler
    assert list(model.history.index) == [0, 1]
    assert np.isfinite(model.get_gene_embeddings().obsm["X_musegnn"]).all()
    model.train(max_epochs=1, **FAST)  # still trainable
    assert len(model.history) == 3


def test_nan_loss_stops_and_keeps_the_last_good_weights(make_planted):
    mdata = _small(make_planted)
    reference = MuSeGNN(mdata)
    reference.train(max_epochs=2, **FAST)
    model = MuSeGNN(mdata)
    with pytest.warns(RuntimeWarning, match="NaN at epoch 2"):
        model.train(max_epochs=10, callbacks=[_Poison()], **FAST)
    assert len(model.history) == 2
    np.testing.assert_array_equal(
        model.get_gene_embeddings().obsm["X_musegnn"], reference.get_gene_embeddings().obsm["X_musegnn"]
    )


def test_one_dataset_trains_on_reconstruction_alone(make_planted):
    mdata = make_planted(n_datasets=1, genes_per_dataset=40, genes_per_module=10)
    model = MuSeGNN(mdata)
    with pytest.warns(UserWarning, match="Only one dataset"):
        model.train(max_epochs=5, **FAST)
    hist = model.history
    assert (hist["sim"] == 0).all() and (hist["infonce"] == 0).all()
    assert hist["bce"].iloc[-1] < hist["bce"].iloc[0]


def test_dataset_without_shared_genes_gets_a_warning(make_planted):
    mdata = _small(make_planted)
    mdata.mod["rna_2"].var_names = [f"mouse_{g}" for g in mdata.mod["rna_2"].var_names]
    model = MuSeGNN(mdata)
    with pytest.warns(UserWarning, match="'rna_2' shares no gene"):
        model.train(max_epochs=1, **FAST)


def test_setup_mudata_records_arguments_and_explains_missing_graphs(make_planted):
    mdata = _small(make_planted)
    MuSeGNN.setup_mudata(mdata, mods=["rna_0", "rna_2"])
    assert mdata.uns["musegnn_setup"] == {"graph_key": "coexpression", "mods": ["rna_0", "rna_2"], "features": "graph"}
    assert [g.name for g in MuSeGNN(mdata).graphs] == ["rna_0", "rna_2"]
    del mdata.mod["rna_1"].uns["coexpression"]
    with pytest.raises(KeyError, match="build_coexpression_graphs"):
        MuSeGNN.setup_mudata(mdata)
    with pytest.raises(KeyError, match="not in the MuData"):
        MuSeGNN.setup_mudata(mdata, mods=["rna_9"])
    with pytest.raises(ValueError, match="features"):
        MuSeGNN.setup_mudata(mdata, mods=["rna_0"], features="pca")


def test_expression_features_take_one_input_per_cell(make_planted):
    mdata = _small(make_planted)
    rng = np.random.default_rng(0)
    for a in mdata.mod.values():
        a.X = rng.poisson(2.0, size=a.shape).astype(np.float32)
    MuSeGNN.setup_mudata(mdata, features="expression")
    model = MuSeGNN(mdata)
    assert [g.features.shape for g in model.graphs] == [(60, 20)] * 3
    np.testing.assert_allclose(model.graphs[0].features.mean(axis=1), 0, atol=1e-5)
    model.train(max_epochs=1, **FAST)
    assert np.isfinite(model.get_gene_embeddings().X).all()


def test_graph_features_are_scaled_per_dataset_to_unit_rms(make_planted):
    """The model sees the same features whatever the scale the builder stored (it grows with sqrt(n_cells))."""
    mdata = _small(make_planted)
    stored = {m: a.varm["coexpression_features"].copy() for m, a in mdata.mod.items()}
    base = MuSeGNN(mdata)
    for k, a in enumerate(mdata.mod.values()):
        a.varm["coexpression_features"] = a.varm["coexpression_features"] * 10.0 ** (k + 1)
    scaled = MuSeGNN(mdata)
    for g0, g1 in zip(base.graphs, scaled.graphs, strict=True):
        np.testing.assert_allclose(np.sqrt(np.mean(g0.features.astype(np.float64) ** 2)), 1.0, rtol=1e-5)
        np.testing.assert_allclose(g1.features, g0.features, rtol=1e-5, atol=1e-6)
        # one factor per dataset: the relative scale of the columns is kept
        raw = stored[g0.name][mdata.mod[g0.name].var["coexpression_gene"].to_numpy()]
        np.testing.assert_allclose(g0.features / g0.features[0, 0], raw / raw[0, 0], rtol=1e-4)


def test_sharing_by_omics_or_omics_and_tissue_and_summary(make_planted):
    mdata = make_planted(omics=["rna", "rna", "atac"], genes_per_dataset=40, genes_per_module=10)
    mdata.mod["rna_1"].uns["coexpression"]["tissue"] = "lung"
    by_omics = MuSeGNN(mdata)
    assert len(by_omics.module.shared) == 2
    by_tissue = MuSeGNN(mdata, share_by="omics_tissue")
    assert by_tissue.groups == ["rna_blood", "rna_lung", "atac_blood"]
    assert len(by_tissue.module.shared) == 3
    text = repr(by_omics)
    assert "3 dataset(s)" in text and "rna (2 dataset(s)), atac (1 dataset(s))" in text
    assert f"{sum(p.numel() for p in by_omics.module.parameters()):,} parameters" in text
    assert "rna_1: rna, lung, human; 40 genes" in text
    with pytest.raises(ValueError, match="share_by"):
        MuSeGNN(mdata, share_by="tissue")


def test_early_stopping_and_progress_bar(make_planted):
    mdata = _small(make_planted)
    model = MuSeGNN(mdata)
    # a min_delta no epoch can meet: training stops once the patience runs out
    model.train(
        max_epochs=20, early_stopping=True, early_stopping_patience=2, early_stopping_min_delta=1e9, lr_encoder=1e-3
    )
    assert len(model.history) == 3
