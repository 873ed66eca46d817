"""The cross-dataset InfoNCE of ``contrastive_anchors='all'``: its value, its draws, and what it does to the space."""

import math

import numpy as np
import pytest
import torch

from musegnn_sc.model._model import MuSeGNN
from musegnn_sc.model._pairs import PairCache, neighbour_lists, sample_common, sample_contrastive
from musegnn_sc.model._training import LossConfig, MuSeGNNTrainingPlan

FAST = {"progress_bar": False, "lr_encoder": 1e-3}


def _plan(model, **config):
    pairs = PairCache([g.genes for g in model.graphs], [g.adjacency for g in model.graphs])
    neighbours = [neighbour_lists(g.adjacency) for g in model.graphs]
    return MuSeGNNTrainingPlan(model.module, model._tensors, pairs, neighbours, LossConfig(**config)), pairs, neighbours


def _loop_info_nce(anchors, positives, tau):
    """Eq. 6 written out: -log(exp(s_kk / tau) / sum_l exp(s_kl / tau)), averaged over anchors."""
    out = []
    for k in range(len(anchors)):
        sims = [
            float(anchors[k] @ positives[m] / (np.linalg.norm(anchors[k]) * np.linalg.norm(positives[m])))
            for m in range(len(positives))
        ]
        out.append(-(sims[k] / tau - math.log(sum(math.exp(s / tau) for s in sims))))
    return float(np.mean(out))


def test_sample_common_draws_distinct_matching_genes():
    rng = np.random.default_rng(0)
    ci = np.array([3, 5, 7, 9, 11])
    cj = np.array([0, 2, 4, 6, 8])
    a, b = sample_common(rng, ci, cj, 3)
    assert len(a) == 3 and len(set(a)) == 3
    for x, y in zip(a, b, strict=True):
        assert cj[np.flatnonzero(ci == x)[0]] == y  # the same gene in both graphs
    a, b = sample_common(rng, ci, cj, 100)
    assert sorted(a) == sorted(ci)
    empty = sample_common(rng, ci[:0], cj[:0], 10)
    assert len(empty[0]) == 0 and len(empty[1]) == 0


@pytest.mark.parametrize("anchors", ["different", "all"])
def test_step_infonce_equals_a_loop_over_the_same_draws(make_planted, anchors):
    mdata = make_planted(genes_per_dataset=60, genes_per_module=20)
    MuSeGNN.setup_mudata(mdata)
    model = MuSeGNN(mdata)
    cfg = {"contrastive_anchors": anchors, "n_contrastive": 12, "seed": 3}
    plan, pairs, neighbours = _plan(model, **cfg)
    i, epoch = 1, 5
    with torch.no_grad():
        got = plan.step_losses(i, epoch)
        z = [model.module.encode(k, model._tensors[k]).numpy().astype(np.float64) for k in range(len(model.graphs))]
    # replay the step's draws in their documented order: partner, anchors of i, anchors of j, common genes
    rng = np.random.default_rng([3, epoch, i])
    j = int(rng.integers(len(model.graphs) - 1))
    j += j >= i
    pair = pairs(i, j)
    a_i, p_i = sample_contrastive(rng, pair.diff_i, *neighbours[i], 12)
    a_j, p_j = sample_contrastive(rng, pair.diff_j, *neighbours[j], 12)
    anc = [z[i][k] for k in a_i] + [z[j][k] for k in a_j]
    pos = [z[i][k] for k in p_i] + [z[j][k] for k in p_j]
    if anchors == "all":
        c_i, c_j = sample_common(rng, pair.common_i, pair.common_j, 12)
        assert len(c_i) == 12
        anc += [z[i][k] for k in c_i]
        pos += [z[j][k] for k in c_j]  # each gene's positive is its own copy in the partner
    expected = _loop_info_nce(np.array(anc), np.array(pos), 0.07)
    assert float(got["infonce"]) == pytest.approx(expected, rel=1e-4)


def test_common_anchors_change_only_the_contrastive_term(make_planted):
    mdata = make_planted(genes_per_dataset=60, genes_per_module=20)
    MuSeGNN.setup_mudata(mdata)
    model = MuSeGNN(mdata)
    with torch.no_grad():
        diff = _plan(model, contrastive_anchors="different")[0].step_losses(0, 0)
        both = _plan(model, contrastive_anchors="all")[0].step_losses(0, 0)
    assert float(diff["bce"]) == float(both["bce"]) and float(diff["sim"]) == float(both["sim"])
    assert float(diff["infonce"]) != float(both["infonce"])


def _separation(model):
    emb = model.get_latent_representation()
    names = list(emb)
    unit = {n: emb[n] / np.linalg.norm(emb[n], axis=1, keepdims=True) for n in names}
    genes = {g.name: list(g.genes) for g in model.graphs}
    same, rand = [], []
    rng = np.random.default_rng(0)
    for a in names:
        for b in names:
            if a >= b:
                continue
            pos_b = {g: k for k, g in enumerate(genes[b])}
            same += [float(unit[a][k] @ unit[b][pos_b[g]]) for k, g in enumerate(genes[a]) if g in pos_b]
            for _ in range(500):
                x, y = rng.integers(len(genes[a])), rng.integers(len(genes[b]))
                if genes[a][x] != genes[b][y]:
                    rand.append(float(unit[a][x] @ unit[b][y]))
    return float(np.mean(same)), float(np.mean(rand))


def test_common_anchors_keep_unrelated_genes_apart_on_planted_data(make_planted):
    """The paper's summed L_Sim with its 0.01-weighted InfoNCE pulls every gene together; repelling them does not."""
    mdata = make_planted(genes_per_dataset=60, genes_per_module=20)
    MuSeGNN.setup_mudata(mdata)
    paper = MuSeGNN(mdata)
    paper.train(max_epochs=40, sim_reduction="sum", lambda_contrastive=0.01, contrastive_anchors="different", **FAST)
    ours = MuSeGNN(mdata)
    ours.train(max_epochs=40, sim_reduction="mean", lambda_contrastive=1.0, contrastive_anchors="all", **FAST)
    same_p, rand_p = _separation(paper)
    same_o, rand_o = _separation(ours)
    assert same_o > 0.8  # copies of a gene still align
    assert rand_o < rand_p - 0.2
    assert same_o - rand_o > same_p - rand_p + 0.1


def test_bad_contrastive_anchors_is_rejected(make_planted):
    mdata = make_planted(genes_per_dataset=30, genes_per_module=10)
    MuSeGNN.setup_mudata(mdata)
    with pytest.raises(ValueError, match="contrastive_anchors"):
        MuSeGNN(mdata).train(max_epochs=1, contrastive_anchors="common", progress_bar=False)
