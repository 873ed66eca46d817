import math

import numpy as np
import pytest
import torch

from musegnn_sc.model._losses import info_nce, reconstruction_loss, similarity_loss


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_reconstruction_loss_is_mean_bce_over_every_entry():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 6))
    target = (rng.random((6, 6)) < 0.4).astype(float)
    p = 1 / (1 + np.exp(-logits))
    expected = -np.mean(target * np.log(p) + (1 - target) * np.log(1 - p))
    got = reconstruction_loss(torch.tensor(logits), torch.tensor(target))
    assert float(got) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_similarity_loss_weights_cosines_of_matched_genes(reduction):
    rng = np.random.default_rng(1)
    zi, zj = rng.normal(size=(7, 4)), rng.normal(size=(5, 4))
    ci, cj, w = np.array([0, 3, 6]), np.array([4, 0, 2]), np.array([0.5, 1.0, 0.25])
    terms = [w[k] * _cos(zi[ci[k]], zj[cj[k]]) for k in range(3)]
    expected = -(sum(terms) if reduction == "sum" else np.mean(terms))
    got = similarity_loss(
        torch.tensor(zi), torch.tensor(zj), torch.tensor(ci), torch.tensor(cj), torch.tensor(w), reduction=reduction
    )
    assert float(got) == pytest.approx(expected, rel=1e-10)


def test_similarity_loss_without_common_genes_is_zero_and_rejects_bad_reduction():
    z = torch.randn(3, 2)
    empty = torch.zeros(0, dtype=torch.long)
    assert float(similarity_loss(z, z, empty, empty, torch.zeros(0))) == 0.0
    with pytest.raises(ValueError, match="sum"):
        similarity_loss(z, z, torch.tensor([0]), torch.tensor([0]), torch.ones(1), reduction="max")


def _info_nce_loop(a, p, tau):
    # Eq. 6: query a_k, positive key p_k, the other keys negatives; cosine similarity.
    n = len(a)
    total = 0.0
    for k in range(n):
        s = np.array([_cos(a[k], p[m]) / tau for m in range(n)])
        total += -(s[k] - math.log(np.exp(s).sum()))
    return total / n


def _ntxent_loop(a, p, tau):
    # pytorch-metric-learning NTXentLoss on embeddings [a; p] with labels [0..n-1, 0..n-1]: for every ordered positive
    # pair (x, y), -log(exp(s_xy) / (exp(s_xy) + sum over items with another label of exp(s_xz))), averaged.
    e = np.vstack([a, p])
    labels = np.concatenate([np.arange(len(a)), np.arange(len(a))])
    losses = []
    for x in range(len(e)):
        for y in range(len(e)):
            if x == y or labels[x] != labels[y]:
                continue
            pos = _cos(e[x], e[y]) / tau
            neg = [_cos(e[x], e[z]) / tau for z in range(len(e)) if labels[z] != labels[x]]
            losses.append(-(pos - math.log(math.exp(pos) + sum(math.exp(v) for v in neg))))
    return float(np.mean(losses))


@pytest.mark.parametrize("symmetric", [False, True])
def test_info_nce_matches_the_per_pair_definition(symmetric):
    rng = np.random.default_rng(2)
    a, p = rng.normal(size=(9, 5)), rng.normal(size=(9, 5))
    expected = _ntxent_loop(a, p, 0.07) if symmetric else _info_nce_loop(a, p, 0.07)
    got = info_nce(torch.tensor(a), torch.tensor(p), temperature=0.07, symmetric=symmetric)
    assert float(got) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("symmetric", [False, True])
def test_info_nce_equals_pytorch_metric_learning(symmetric):
    # the library the authors' code calls: SelfSupervisedLoss(NTXentLoss(0.07)), symmetric by default since 2.2
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    rng = np.random.default_rng(4)
    a, p = (torch.tensor(rng.normal(size=(200, 32))) for _ in range(2))
    expected = losses.SelfSupervisedLoss(losses.NTXentLoss(temperature=0.07), symmetric=symmetric)(a, p)
    got = info_nce(a, p, temperature=0.07, symmetric=symmetric)
    assert float(got) == pytest.approx(float(expected), rel=1e-9)


def test_info_nce_is_low_when_positives_match_and_zero_when_empty():
    rng = np.random.default_rng(3)
    a = torch.tensor(rng.normal(size=(20, 8)))
    aligned = float(info_nce(a, a + 0.01 * torch.randn(20, 8, dtype=torch.float64)))
    shuffled = float(info_nce(a, a[torch.randperm(20)]))
    assert aligned < 0.1 < shuffled
    assert float(info_nce(torch.zeros(0, 3), torch.zeros(0, 3))) == 0.0
