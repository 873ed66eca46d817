from __future__ import annotations

import time
import warnings

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.metrics import roc_auc_score, silhouette_samples

from musegnn_sc.tl._evaluate import (
    METRICS,
    common_genes_ratio,
    edge_auc,
    evaluate,
    graph_connectivity,
    ilisi,
    leiden,
    lisi_knn,
    neighbours_overlap,
    roc_auc,
    score_methods,
    silhouette_batch,
    umap_connectivities,
)


# ---------------------------------------------------------------------------------------------------------------------
# helpers: a MuData of graphs and a gene-level AnnData in the layout of train_musegnn
# ---------------------------------------------------------------------------------------------------------------------
def _mudata(graphs: dict[str, tuple[list[str], np.ndarray]]) -> md.MuData:
    mods = {}
    for name, (genes, A) in graphs.items():
        a = ad.AnnData(
            X=sparse.csr_matrix((3, len(genes)), dtype=np.float32),
            var=pd.DataFrame(index=genes),
            obs=pd.DataFrame(index=[f"{name}_c{i}" for i in range(3)]),
        )
        a.var["coexpression_gene"] = True
        a.varp["coexpression_connectivities"] = sparse.csr_matrix(np.asarray(A, dtype=np.float32))
        a.uns["coexpression"] = {"connectivities_key": "coexpression_connectivities", "gene_key": "coexpression_gene"}
        mods[name] = a
    with warnings.catch_warnings():
        # mudata's own FutureWarning about .update() and the note on shared obs names are not under test.
        warnings.simplefilter("ignore")
        return md.MuData(mods, axis=1)


def _gdata(rows: list[tuple[str, str]], X: np.ndarray, **obs_cols) -> ad.AnnData:
    obs = pd.DataFrame(rows, columns=["dataset", "gene"])
    obs.index = obs["dataset"] + ":" + obs["gene"]
    obs["dataset"] = pd.Categorical(obs["dataset"])
    for k, v in obs_cols.items():
        obs[k] = v
    g = ad.AnnData(obs=obs)
    g.obsm["X_musegnn"] = np.asarray(X, dtype=np.float32)
    return g


def _synthetic(n_datasets=3, n_genes=60, n_modules=4, noise=0.05, seed=0, integrated=True):
    """Datasets sharing all genes; planted modules give graph edges and, if `integrated`, embedding clusters."""
    rng = np.random.default_rng(seed)
    genes = [f"G{i:03d}" for i in range(n_genes)]
    module = np.arange(n_genes) % n_modules
    centres = rng.normal(size=(n_modules, 8)) * 5
    graphs, rows, X = {}, [], []
    for d in range(n_datasets):
        same = module[:, None] == module[None, :]
        A = np.triu(rng.random((n_genes, n_genes)) < np.where(same, 0.7, 0.05), 1)
        A = A | A.T
        np.fill_diagonal(A, True)
        graphs[f"d{d}"] = (genes, A)
        rows += [(f"d{d}", g) for g in genes]
        if integrated:
            X.append(centres[module] + noise * rng.normal(size=(n_genes, 8)))
        else:  # each dataset in its own region of the space
            X.append(centres[module] + 100.0 * d + noise * rng.normal(size=(n_genes, 8)))
    return _gdata(rows, np.vstack(X)), _mudata(graphs)


# ---------------------------------------------------------------------------------------------------------------------
# AUC
# ---------------------------------------------------------------------------------------------------------------------
def test_roc_auc_matches_sklearn_with_ties_and_weights():
    rng = np.random.default_rng(1)
    y = rng.random(500) < 0.3
    s = rng.integers(0, 6, 500).astype(float)  # many ties
    w = rng.random(500)
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert roc_auc(y, s, w) == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-12)
    assert np.isnan(roc_auc(np.ones(4, bool), np.arange(4.0)))


def test_edge_auc_hand_example():
    # Three unit vectors at 0, 60 and 180 degrees: cos(0,1) = 0.5, cos(0,2) = -1, cos(1,2) = -0.5.
    ang = np.deg2rad([0.0, 60.0, 180.0])
    Z = np.column_stack([np.cos(ang), np.sin(ang)]) * [[1.0], [3.0], [0.2]]  # lengths must not matter
    A = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 1]])  # edges 0-2, 1-2, self-loops; the non-edge 0-1 scores highest
    assert edge_auc(Z, A, include_self_loops=False) == pytest.approx(0.0)
    # With the diagonal: positives {1, 1, 1, -1, -1, -0.5, -0.5} vs negatives {0.5, 0.5}: 6 of 14 pairs ordered.
    assert edge_auc(Z, sparse.csr_matrix(A)) == pytest.approx(6 / 14)
    # A non-symmetric adjacency takes the general path and gives the entry-wise AUC.
    B = A.copy()
    B[0, 2] = 0
    Zn = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    assert edge_auc(Z, B) == pytest.approx(roc_auc_score(B.ravel(), (Zn @ Zn.T).ravel()))


def test_edge_auc_perfect_and_random():
    rng = np.random.default_rng(0)
    module = np.repeat([0, 1, 2], 10)
    Z = np.eye(3)[module] + 0.01 * rng.normal(size=(30, 3))
    A = module[:, None] == module[None, :]
    assert edge_auc(Z, A) == pytest.approx(1.0)
    assert abs(edge_auc(rng.normal(size=(30, 3)), A, include_self_loops=False) - 0.5) < 0.15


# ---------------------------------------------------------------------------------------------------------------------
# ASW, GC, iLISI, CGR, NO kernels
# ---------------------------------------------------------------------------------------------------------------------
def test_silhouette_batch_perfect_separation_and_mixing():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(20, 4))
    labels = np.repeat(["a", "b"], 20)
    batch = np.tile(np.repeat(["x", "y"], 10), 2)
    # Mixing: batch y is batch x shifted by a vanishing amount, so silhouettes are -1/n (twin at distance ~0).
    X_mixed = np.vstack([base[:10], base[:10] + 1e-9, base[10:] + 50, base[10:] + 50 + 1e-9])
    assert silhouette_batch(X_mixed, batch, labels) == pytest.approx(1 - 1 / 10, abs=1e-6)
    # Separation: within each cluster the two batches are far apart: silhouettes ~1, score ~0.
    X_sep = np.vstack([base[:10] * 0.01, base[:10] * 0.01 + 100, base[10:] * 0.01 + 500, base[10:] * 0.01 + 900])
    assert silhouette_batch(X_sep, batch, labels) < 0.01


def test_silhouette_batch_matches_independent_formula_and_skips():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 3))
    labels = np.array(["a"] * 20 + ["b"] * 15 + ["c"] * 3 + ["d"] * 2)
    batch = rng.choice(["x", "y", "z"], 40)
    batch[35:38] = ["x", "y", "z"]  # group c: every member its own batch -> skipped
    batch[38:40] = "x"  # group d: one batch -> skipped
    expected = np.mean(
        [np.mean(1 - np.abs(silhouette_samples(X[labels == g], batch[labels == g]))) for g in ("a", "b")]
    )
    assert silhouette_batch(X, batch, labels) == pytest.approx(expected)
    assert np.isnan(silhouette_batch(X[38:], batch[38:], labels[38:]))


def test_graph_connectivity_hand_example():
    # Label a: nodes 0-3 with components {0, 1, 2} and {3}; label b: nodes 4-5 connected. Edge 2-4 crosses labels.
    C = sparse.csr_matrix((6, 6))
    C = C.tolil()
    for i, j in [(0, 1), (1, 2), (4, 5), (2, 4)]:
        C[i, j] = C[j, i] = 0.5
    labels = np.array(["a"] * 4 + ["b"] * 2)
    assert graph_connectivity(C, labels) == pytest.approx((3 / 4 + 1) / 2)


def test_lisi_known_values():
    # Point 0 with 6 equidistant neighbours: equal kernel weights whatever the bandwidth.
    idx = np.array([[0, 1, 2, 3, 4, 5, 6]])
    dist = np.array([[0.0, 1, 1, 1, 1, 1, 1]])
    labels = np.array(["x", "x", "x", "x", "y", "y", "y"])
    assert lisi_knn(dist, idx, labels, perplexity=2)[0] == pytest.approx(1 / (0.5**2 + 0.5**2))
    labels = np.array(["x", "x", "x", "y", "y", "y", "y"])
    assert lisi_knn(dist, idx, labels, perplexity=2)[0] == pytest.approx(1 / ((2 / 6) ** 2 + (4 / 6) ** 2))
    labels = np.array(["x", "y", "y", "y", "y", "y", "y"])
    assert lisi_knn(dist, idx, labels, perplexity=2)[0] == pytest.approx(1.0)


def test_lisi_matches_independent_bisection():
    from scipy.optimize import brentq
    from scipy.special import xlogy

    rng = np.random.default_rng(5)
    n, k = 30, 12
    D = np.sort(rng.random((n, k)) * 3, axis=1)
    D[:, 0] = 0.0
    I = (np.arange(n)[:, None] + np.arange(k)[None, :]) % n  # itself first, then k - 1 others
    labels = rng.choice(["a", "b", "c"], n)
    perp = 3.0
    got = lisi_knn(D, I, labels, perplexity=perp)
    for i in range(n):
        d = D[i, 1:]

        def entropy_gap(beta, d=d):
            p = np.exp(-(d - d.min()) * beta)  # the shift cancels in the normalisation
            p /= p.sum()
            return -xlogy(p, p).sum() - np.log(perp)

        beta = brentq(entropy_gap, 1e-6, 1e3)
        p = np.exp(-d * beta)
        p /= p.sum()
        mass = pd.Series(p).groupby(labels[I[i, 1:]]).sum().to_numpy()
        assert got[i] == pytest.approx(1 / np.sum(mass**2), rel=1e-3)


def test_ilisi_perfect_mixing_and_separation():
    rng = np.random.default_rng(0)
    from sklearn.neighbors import NearestNeighbors

    # Perfect mixing: alternating batches, each point's 10 equidistant neighbours are 5 of each: LISI 2, scaled 1.
    n = 20
    ind = (np.arange(n)[:, None] + np.arange(11)[None, :]) % n
    dist = np.where(np.arange(11) == 0, 0.0, 1.0)[None, :].repeat(n, axis=0)
    assert ilisi(dist, ind, np.tile(["x", "y"], n // 2)) == pytest.approx(1.0)
    assert ilisi(dist, ind, np.tile(["x", "y"], n // 2), scale=False) == pytest.approx(2.0)
    # Random labels over one cloud: mixed, far above separated batches.
    X = rng.normal(size=(600, 3))
    dist, ind = NearestNeighbors(n_neighbors=30).fit(X).kneighbors(X)
    assert ilisi(dist, ind, rng.choice(["x", "y"], 600)) > 0.6
    base = X[:50]
    batch = np.repeat(["x", "y"], 50)
    X_sep = np.vstack([base, base + 100])
    dist, ind = NearestNeighbors(n_neighbors=30).fit(X_sep).kneighbors(X_sep)
    assert ilisi(dist, ind, batch) == pytest.approx(0.0, abs=1e-9)


def test_ilisi_agrees_with_scib_metrics():
    scib_metrics = pytest.importorskip("scib_metrics")
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6))
    batch = rng.choice(["a", "b", "c"], 300)
    X[batch == "a"] += 0.7
    dist, ind = NearestNeighbors(n_neighbors=45).fit(X).kneighbors(X)
    expected = scib_metrics.ilisi_knn(NeighborsResults(indices=ind, distances=dist), batch)
    assert ilisi(dist, ind, batch) == pytest.approx(float(expected), rel=1e-4)


def test_common_genes_ratio_closed_form():
    genes = np.array(["A", "A", "B", "C", "D"])
    clusters = np.array([1, 1, 1, 2, 2])
    assert common_genes_ratio(genes, clusters) == pytest.approx(1 - (2 + 2) / 5)
    # T copies of every gene together: 1 - 1/T; every copy apart: 0.
    genes = np.repeat(["A", "B", "C"], 4)
    assert common_genes_ratio(genes, genes) == pytest.approx(1 - 1 / 4)
    assert common_genes_ratio(genes, np.arange(12)) == 0.0


def _no_bruteforce(neigh_sets, datasets, clusters):
    """The authors' definition: ordered pairs, Python sets."""
    total = 0.0
    n = len(neigh_sets)
    for c in np.unique(clusters):
        idx = np.flatnonzero(clusters == c)
        vals = [
            len(neigh_sets[a] & neigh_sets[b]) / len(neigh_sets[a] | neigh_sets[b])
            for a in idx
            for b in idx
            if datasets[a] != datasets[b]
        ]
        total += len(idx) / n * (np.mean(vals) if vals else 0.0)
    return total


def test_neighbours_overlap_hand_example_through_evaluate():
    genes = ["A", "B", "C"]
    A1 = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]])  # d1: A-B
    A2 = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1]])  # d2: A-B, B-C
    mdata = _mudata({"d1": (genes, A1), "d2": (genes, A2)})
    rows = [("d1", "A"), ("d2", "A"), ("d2", "B"), ("d1", "B"), ("d1", "C"), ("d2", "C")]
    X = np.random.default_rng(0).normal(size=(6, 4))
    gdata = _gdata(rows, X, leiden=["1", "1", "1", "2", "2", "2"])
    # Cluster 1: J(d1A, d2A) = 1, J(d1A, d2B) = 2/3 -> 5/6. Cluster 2: J(d1B, d2C) = 1/3, J(d1C, d2C) = 1/2 -> 5/12.
    res = evaluate(gdata, mdata, leiden_key="leiden", metrics=["NO", "CGR", "GC"])
    assert res["NO"] == pytest.approx(0.5 * 5 / 6 + 0.5 * 5 / 12)
    assert res["CGR"] == pytest.approx(1 - (2 + 2) / 6)  # {A, A, B} and {B, C, C}
    assert res.attrs["n_clusters"] == 2  # the given clusters are used, not recomputed
    assert 0.0 <= res["GC"] <= 1.0


def test_neighbours_overlap_matches_bruteforce():
    rng = np.random.default_rng(2)
    n, V = 80, 40
    M = sparse.random(n, V, density=0.2, random_state=3, format="csr")
    M.data[:] = 1
    M = M + sparse.csr_matrix((np.ones(n), (np.arange(n), rng.integers(0, V, n))), shape=(n, V))  # non-empty rows
    M.data[:] = 1
    datasets = rng.choice(["a", "b", "c"], n)
    clusters = rng.integers(0, 5, n)
    clusters[:3] = 9  # cluster 9: one dataset only -> contributes 0
    datasets[:3] = "a"
    clusters[clusters == 9] = 9
    sets = [set(M[i].indices) for i in range(n)]
    expected = _no_bruteforce(sets, datasets, clusters)
    assert neighbours_overlap(M, datasets, clusters) == pytest.approx(expected)
    assert neighbours_overlap(M, datasets, clusters, chunk_size=7, max_dense=0) == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------------------------------
# kNN graph and clustering
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_umap_connectivities_match_scanpy():
    sc = pytest.importorskip("scanpy")
    from musegnn_sc.tl._evaluate import _knn

    X = np.random.default_rng(0).normal(size=(300, 6))
    a = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(300)]))
    a.obsm["X"] = X
    sc.pp.neighbors(a, use_rep="X", n_neighbors=15)
    d, i = _knn(X, 15)
    C = umap_connectivities(d, i)
    assert abs(C - a.obsp["connectivities"]).max() < 1e-5


def test_leiden_recovers_planted_clusters():
    from sklearn.metrics import adjusted_rand_score

    from musegnn_sc.tl._evaluate import _knn

    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(4), 50)
    X = np.eye(4)[truth] * 20 + rng.normal(size=(200, 4))
    C = umap_connectivities(*_knn(X, 15))
    assert (C != C.T).nnz == 0
    labels = leiden(C, seed=0)
    assert adjusted_rand_score(truth, labels) == pytest.approx(1.0)
    assert (leiden(C, seed=0) == labels).all()


# ---------------------------------------------------------------------------------------------------------------------
# evaluate end to end
# ---------------------------------------------------------------------------------------------------------------------
def test_evaluate_integrated_beats_separated_and_does_not_mutate():
    good, mdata = _synthetic(integrated=True)
    bad, _ = _synthetic(integrated=False)
    before = (good.obs.copy(), good.obsm["X_musegnn"].copy(), list(good.obsm), list(good.uns))
    s_good = evaluate(good, mdata)
    s_bad = evaluate(bad, mdata)
    assert list(s_good.index) == list(METRICS)
    assert ((s_good >= 0) & (s_good <= 1)).all()
    # Integration metrics: copies of a gene from different datasets together vs apart.
    for m in ("ASW", "iLISI", "CGR", "NO"):
        assert s_good[m] > s_bad[m] + 0.2, m
    assert s_good["iLISI"] > 0.9
    assert s_bad["iLISI"] < 0.05
    assert s_good["AUC"] > 0.8  # the planted modules are the graph's dense blocks
    assert s_good.attrs["n_common_genes"] == 60
    pd.testing.assert_frame_equal(good.obs, before[0])
    np.testing.assert_array_equal(good.obsm["X_musegnn"], before[1])
    assert list(good.obsm) == before[2]
    assert list(good.uns) == before[3]


def test_common_genes_threshold():
    genes = ["A", "B", "C"]
    eye = np.eye(3)
    mdata = _mudata({"d1": (genes, eye), "d2": (genes[:2], np.eye(2)), "d3": (genes[:1], np.eye(1))})
    rows = [("d1", "A"), ("d1", "B"), ("d1", "C"), ("d2", "A"), ("d2", "B"), ("d3", "A")]
    gdata = _gdata(rows, np.random.default_rng(0).normal(size=(6, 3)))
    assert evaluate(gdata, mdata, metrics=["CGR"]).attrs["n_common_genes"] == 1
    assert evaluate(gdata, mdata, metrics=["CGR"], common_min_datasets=2).attrs["n_common_genes"] == 2
    with pytest.raises(ValueError, match="at least 2"):
        evaluate(gdata, mdata, common_min_datasets=1)


def test_evaluate_errors_name_the_fix():
    gdata, mdata = _synthetic(n_datasets=2, n_genes=20)
    with pytest.raises(KeyError, match="use_rep"):
        evaluate(gdata, mdata, use_rep="X_missing")
    with pytest.raises(ValueError, match="Unknown metric"):
        evaluate(gdata, mdata, metrics=["AUROC"])
    other = _mudata({"zz": (["G000", "G001"], np.eye(2))})
    with pytest.raises(KeyError, match="not modalities"):
        evaluate(gdata, other)
    with pytest.raises(KeyError, match="build_coexpression_graphs"):
        evaluate(gdata, mdata, graph_key="nothing", metrics=["AUC"])


@pytest.mark.slow
def test_evaluate_20_datasets_1000_genes_in_seconds():
    rng = np.random.default_rng(0)
    n_d, n_g = 20, 1000
    universe = np.array([f"G{i:05d}" for i in range(1500)])
    graphs, rows, X = {}, [], []
    centres = rng.normal(size=(20, 32))
    for d in range(n_d):
        idx = np.sort(np.r_[np.arange(600), 600 + rng.choice(900, n_g - 600, replace=False)])
        A = rng.random((n_g, n_g)) < 0.3
        A = np.triu(A, 1)
        A = A | A.T
        np.fill_diagonal(A, True)
        graphs[f"d{d}"] = (list(universe[idx]), A)
        rows += [(f"d{d}", g) for g in universe[idx]]
        X.append(centres[idx % 20] + rng.normal(size=(n_g, 32)))
    gdata, mdata = _gdata(rows, np.vstack(X)), _mudata(graphs)
    t0 = time.perf_counter()
    res = evaluate(gdata, mdata)
    elapsed = time.perf_counter() - t0
    assert res.notna().all()
    assert elapsed < 60, elapsed


# ---------------------------------------------------------------------------------------------------------------------
# Avg Score / Avg Rank
# ---------------------------------------------------------------------------------------------------------------------
def test_score_methods_hand_computation():
    table = pd.DataFrame({"m1": [0.9, 0.5, 0.1], "m2": [0.1, 0.5, 0.3]}, index=pd.Index(["A", "B", "C"], name="method"))
    out = score_methods(table)
    # m1 scaled: A 1, B .5, C 0; m2 scaled: A 0, B 1, C .5.  Ranks m1: 1, 2, 3; m2: 3, 1, 2.
    assert out.loc["A", "avg_score"] == pytest.approx(0.5)
    assert out.loc["B", "avg_score"] == pytest.approx(0.75)
    assert out.loc["C", "avg_score"] == pytest.approx(0.25)
    assert out.loc[["A", "B", "C"], "avg_rank"].tolist() == pytest.approx([2.0, 1.5, 2.5])
    assert list(out.index) == ["B", "A", "C"]


def test_score_methods_seeds_ties_and_constant_metric():
    long = pd.DataFrame(
        {
            "method": ["A", "A", "B", "B", "C", "C"],
            "seed": [0, 1, 0, 1, 0, 1],
            "m1": [0.8, 1.0, 0.4, 0.6, 0.0, 0.2],  # means .9, .5, .1
            "m2": [0.2, 0.2, 0.5, 0.5, 0.2, 0.2],  # A and C tie
            "m3": [0.7, 0.7, 0.7, 0.7, 0.7, 0.7],  # constant: ignored by the score, rank 2 for all
        }
    )
    out = score_methods(long)
    assert out.loc["A", "m1"] == pytest.approx(0.9)
    assert out.loc["A", "m1_std"] == pytest.approx(np.std([0.8, 1.0], ddof=1))
    assert out.loc["A", "avg_score"] == pytest.approx((1 + 0) / 2)
    assert out.loc["B", "avg_score"] == pytest.approx((0.5 + 1) / 2)
    assert out.loc["C", "avg_score"] == pytest.approx((0 + 0) / 2)
    # Ranks: m1 A1 B2 C3; m2 B1, A and C tie at 2.5; m3 all 2.
    assert out.loc["A", "avg_rank"] == pytest.approx((1 + 2.5 + 2) / 3)
    assert out.loc["C", "avg_rank"] == pytest.approx((3 + 2.5 + 2) / 3)
    # Per-seed scores are identical here (same ordering and spacing in both seeds): no spread.
    assert out.loc["A", "avg_score_std"] == pytest.approx(0.0)
    assert (out["n_seeds"] == 2).all()
    # lower_is_better flips a metric.
    flipped = score_methods(long, metrics=["m1"], lower_is_better=["m1"])
    assert flipped.loc["C", "avg_score"] == pytest.approx(1.0)
