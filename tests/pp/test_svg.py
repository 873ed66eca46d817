from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from musegnn_sc.pp._svg import rank_spatial_genes, spatially_variable_genes

N_PLANTED = 5


def _spatial_adata(n_side: int = 20, n_null: int = 60, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    xx, yy = np.meshgrid(np.arange(n_side, dtype=float), np.arange(n_side, dtype=float))
    coords = np.c_[xx.ravel(), yy.ravel()] + rng.normal(0, 0.15, (n_side**2, 2))
    x, y = (coords / n_side).T
    planted = [
        1 + 5 * x,
        1 + 5 * y,
        0.5 + 8 * np.exp(-((x - 0.3) ** 2 + (y - 0.65) ** 2) / 0.02),
        0.5 + 6 * np.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.05),
        2.5 + 2 * np.cos(4 * np.pi * (x - 0.5)),
    ]
    means = np.column_stack([*planted, *[np.full(len(x), m) for m in rng.uniform(0.5, 5, n_null)]])
    counts = rng.poisson(means).astype(np.float32)
    # Planted genes are interleaved with null ones so that position in var says nothing.
    perm = rng.permutation(counts.shape[1])
    adata = ad.AnnData(
        sparse.csr_matrix(counts[:, perm]),
        obs=pd.DataFrame(index=[f"spot{i}" for i in range(len(x))]),
        var=pd.DataFrame({"planted": perm < N_PLANTED}, index=[f"gene{i}" for i in range(counts.shape[1])]),
        obsm={"spatial": coords},
    )
    return adata


@pytest.fixture
def adata() -> ad.AnnData:
    return _spatial_adata()


def _snapshot(adata: ad.AnnData) -> dict:
    return {
        "X": adata.X.toarray().copy(),
        "var": adata.var.copy(),
        "obs": adata.obs.copy(),
        "obsm": {k: np.array(v, copy=True) for k, v in adata.obsm.items()},
        "obsp": set(adata.obsp),
        "uns": set(adata.uns),
        "layers": set(adata.layers),
    }


def _assert_unchanged(adata: ad.AnnData, snap: dict, *, new_var=(), new_uns=()) -> None:
    np.testing.assert_array_equal(adata.X.toarray(), snap["X"])
    pd.testing.assert_frame_equal(adata.var.drop(columns=list(new_var)), snap["var"])
    pd.testing.assert_frame_equal(adata.obs, snap["obs"])
    assert set(adata.obsm) == set(snap["obsm"])
    for k, v in snap["obsm"].items():
        np.testing.assert_array_equal(adata.obsm[k], v)
    assert set(adata.obsp) == snap["obsp"]
    assert set(adata.uns) == snap["uns"] | set(new_uns)
    assert set(adata.layers) == snap["layers"]


@pytest.mark.parametrize("method", ["sparkx", "moran"])
def test_finds_planted_genes_and_touches_only_documented_keys(adata, method):
    snap = _snapshot(adata)
    key = f"svg_{method}"
    out = spatially_variable_genes(adata, method=method, n_top_genes=N_PLANTED, key_added=key)
    assert out is None
    new_var = [key, f"{key}_score", f"{key}_pval", f"{key}_padj", f"{key}_rank"]
    _assert_unchanged(adata, snap, new_var=new_var, new_uns=[key])

    flagged = adata.var[key].to_numpy()
    assert adata.var[key].dtype == bool
    assert flagged.sum() == N_PLANTED
    np.testing.assert_array_equal(flagged, adata.var["planted"].to_numpy())
    assert (adata.var.loc[adata.var["planted"], f"{key}_padj"] < 0.05).all()
    ranks = adata.var[f"{key}_rank"]
    np.testing.assert_array_equal(np.sort(ranks.to_numpy()), np.arange(adata.n_vars))
    assert set(ranks[flagged]) == set(range(N_PLANTED))
    # Ranks follow the score.
    order = ranks.sort_values().index
    assert adata.var.loc[order, f"{key}_score"].is_monotonic_decreasing
    params = adata.uns[key]["params"]
    assert params["method"] == method
    assert params["n_top_genes"] == N_PLANTED


def test_copy_returns_new_object_and_leaves_input(adata):
    snap = _snapshot(adata)
    out = spatially_variable_genes(adata, n_top_genes=3, copy=True)
    assert isinstance(out, ad.AnnData)
    assert out is not adata
    _assert_unchanged(adata, snap)
    assert out.var["spatially_variable"].sum() == 3
    assert "spatially_variable" in out.uns


def test_rank_spatial_genes_does_not_touch_adata(adata):
    X = adata.X.toarray()
    X[:, 0] = 0  # a gene without counts cannot be ranked
    adata.X = sparse.csr_matrix(X)
    snap = _snapshot(adata)
    res = rank_spatial_genes(adata)
    _assert_unchanged(adata, snap)
    assert list(res.columns) == ["score", "pval", "padj", "rank"]
    pd.testing.assert_index_equal(res.index, adata.var_names)
    assert np.isnan(res["rank"].iloc[0])
    assert res["pval"].iloc[0] == 1
    np.testing.assert_array_equal(np.sort(res["rank"].dropna()), np.arange(adata.n_vars - 1))


def test_layer_and_rows(adata):
    ref = rank_spatial_genes(adata)
    adata.layers["counts"] = adata.X.copy()
    adata.X = sparse.csr_matrix(np.log1p(adata.X.toarray()))
    pd.testing.assert_frame_equal(rank_spatial_genes(adata, layer="counts"), ref)
    with pytest.raises(ValueError, match="layer="):
        rank_spatial_genes(adata)
    rows = np.ones(adata.n_obs, bool)
    rows[:50] = False
    sub = adata[50:].copy()
    pd.testing.assert_frame_equal(
        rank_spatial_genes(adata, layer="counts", rows=rows), rank_spatial_genes(sub, layer="counts")
    )


def test_missing_coordinates(adata):
    del adata.obsm["spatial"]
    with pytest.raises(KeyError, match=r"obsm\['spatial'\].*spatial_key="):
        spatially_variable_genes(adata)
    adata.obsm["xy"] = np.zeros((adata.n_obs, 2)) + np.arange(adata.n_obs)[:, None]
    spatially_variable_genes(adata, spatial_key="xy", n_top_genes=2)
    assert adata.uns["spatially_variable"]["params"]["spatial_key"] == "xy"


def test_bad_input(adata):
    with pytest.raises(ValueError, match="one cell|1 cell"):
        spatially_variable_genes(adata[:1].copy())
    with pytest.raises(ValueError, match="empty"):
        spatially_variable_genes(adata[:, []].copy())
    dup = adata.copy()
    dup.var_names = ["g"] * dup.n_vars
    with pytest.raises(ValueError, match="duplicated"):
        spatially_variable_genes(dup)
    with pytest.raises(ValueError, match="method"):
        spatially_variable_genes(adata, method="sepal")
    with pytest.raises(ValueError, match="n_top_genes"):
        spatially_variable_genes(adata, n_top_genes=0)
    neg = adata.copy()
    neg.X = -neg.X
    with pytest.raises(ValueError, match="negative"):
        spatially_variable_genes(neg)
    assert "spatially_variable" not in adata.var


def test_warnings_for_empty_spots_and_too_few_genes(adata):
    with pytest.warns(UserWarning, match=rf"Only {adata.n_vars} gene.*n_top_genes=500") as rec:
        out = spatially_variable_genes(adata, n_top_genes=500, copy=True)
    assert any(f"n_top_genes={adata.n_vars}` or less" in str(r.message) for r in rec)
    assert out.var["spatially_variable"].all()

    X = adata.X.toarray()
    X[:3] = 0
    adata.X = sparse.csr_matrix(X)
    with pytest.warns(UserWarning, match="3 cell"):
        ref = rank_spatial_genes(adata)
    pd.testing.assert_frame_equal(
        ref, rank_spatial_genes(adata, rows=np.asarray(X.sum(axis=1) > 0)), check_exact=False, rtol=1e-12
    )
