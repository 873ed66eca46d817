import numpy as np
import pytest
from scipy import sparse

from musegnn_sc.model._pairs import PairCache, jaccard_weights, neighbour_lists, pair_index, sample_contrastive


def _random_graph(rng, genes, p=0.3):
    n = len(genes)
    upper = np.triu(rng.random((n, n)) < p, k=1)
    a = upper | upper.T
    np.fill_diagonal(a, True)
    return sparse.csr_matrix(a.astype(np.float32))


def _neighbour_sets(genes, adj):
    dense = adj.toarray() != 0
    return {g: {genes[k] for k in np.flatnonzero(dense[i])} for i, g in enumerate(genes)}


@pytest.fixture
def two_graphs():
    rng = np.random.default_rng(0)
    universe = np.array([f"g{k}" for k in range(40)], dtype=object)
    gi = rng.permutation(universe)[:25]
    gj = rng.permutation(universe)[:30]
    return gi, _random_graph(rng, gi), gj, _random_graph(rng, gj)


def test_pair_index_matches_set_definitions(two_graphs):
    gi, ai, gj, aj = two_graphs
    pair = pair_index(gi, ai, gj, aj)
    common = set(gi) & set(gj)
    assert list(gi[pair.common_i]) == [g for g in gi if g in common]  # graph i's order
    assert np.array_equal(gi[pair.common_i], gj[pair.common_j])
    assert set(gi[pair.diff_i]) == set(gi) - set(gj)
    assert set(gj[pair.diff_j]) == set(gj) - set(gi)
    ni, nj = _neighbour_sets(gi, ai), _neighbour_sets(gj, aj)
    expected = [len(ni[g] & nj[g]) / len(ni[g] | nj[g]) for g in gi[pair.common_i]]
    np.testing.assert_allclose(pair.weights, expected, rtol=1e-6)
    assert (pair.weights > 0).all()  # self-loops: every gene is in its own neighbourhood


def test_jaccard_is_one_for_identical_graphs_and_zero_without_common_genes():
    rng = np.random.default_rng(1)
    genes = np.array([f"g{k}" for k in range(15)], dtype=object)
    a = _random_graph(rng, genes)
    idx = np.arange(15)
    np.testing.assert_allclose(jaccard_weights(a, a, idx, idx), 1.0)
    assert jaccard_weights(a, a, idx[:0], idx[:0]).shape == (0,)


def test_pair_cache_reverse_pair_equals_direct_computation(two_graphs):
    gi, ai, gj, aj = two_graphs
    cache = PairCache([gi, gj], [ai, aj])
    cache(0, 1)
    rev = cache(1, 0)
    direct = pair_index(gj, aj, gi, ai)
    for field in ("common_i", "common_j", "weights", "diff_i", "diff_j"):
        np.testing.assert_array_equal(getattr(rev, field), getattr(direct, field))
    assert cache.n_anchors(0) == len(set(gi) & set(gj))


def test_pair_cache_keeps_the_most_recently_used_pairs_only(two_graphs):
    gi, ai, gj, aj = two_graphs
    cache = PairCache([gi, gj, gi], [ai, aj, ai], max_pairs=2)
    first = cache(0, 1)
    cache(1, 2)
    cache(0, 1)  # used again: now the most recent
    cache(2, 0)  # evicts (1, 2), the least recently used
    assert list(cache._cache) == [(0, 1), (2, 0)]
    assert cache(0, 1) is first
    again = cache(1, 2)  # recomputed after eviction, equal to what it was
    direct = pair_index(gj, aj, gi, ai)
    for field in ("common_i", "common_j", "weights", "diff_i", "diff_j"):
        np.testing.assert_array_equal(getattr(again, field), getattr(direct, field))
    assert len(cache._cache) == 2


def test_sample_contrastive_draws_distinct_anchors_and_true_neighbours():
    rng = np.random.default_rng(2)
    genes = np.array([f"g{k}" for k in range(30)], dtype=object)
    adj = _random_graph(rng, genes, p=0.2).tolil()
    adj[5, :] = 0
    adj[:, 5] = 0
    adj[5, 5] = 1  # gene 5: only its self-loop
    adj = adj.tocsr()
    indptr, indices = neighbour_lists(adj)
    diff = np.arange(30)
    anchors, pos = sample_contrastive(np.random.default_rng(3), diff, indptr, indices, 30)
    assert len(set(anchors)) == 30
    dense = adj.toarray() != 0
    for a, p in zip(anchors, pos, strict=True):
        if a == 5:
            assert p == 5
        else:
            assert p != a and dense[a, p]
    again = sample_contrastive(np.random.default_rng(3), diff, indptr, indices, 30)
    np.testing.assert_array_equal(again[0], anchors)
    np.testing.assert_array_equal(again[1], pos)
    few, _ = sample_contrastive(np.random.default_rng(3), diff, indptr, indices, 7)
    assert len(few) == 7
    none, _ = sample_contrastive(np.random.default_rng(3), diff[:0], indptr, indices, 7)
    assert len(none) == 0
