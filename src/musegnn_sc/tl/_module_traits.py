"""Module-trait correlation (WGCNA's module-trait relationships, hdWGCNA's ``ModuleTraitCorrelation``)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import stats

from musegnn_sc import _logging
from musegnn_sc.tl._score_modules import SCORES_KEY


def get_scores(adata: AnnData, scores_key: str) -> pd.DataFrame:
    """``adata.obsm[scores_key]`` as a cells x modules DataFrame, with a clear error when it is missing."""
    if not isinstance(adata, AnnData):
        msg = (
            f"`adata` must be an AnnData, got {type(adata).__name__}; for a MuData pass one modality "
            "(`mdata.mod[name]`)."
        )
        raise TypeError(msg)
    if scores_key not in adata.obsm:
        avail = ", ".join(repr(k) for k in adata.obsm) or "none"
        msg = (
            f"`adata.obsm[{scores_key!r}]` not found (obsm keys: {avail}). Run `msg.tl.score_modules(adata, gdata)` "
            "first, or name the scores with `scores_key=`."
        )
        raise KeyError(msg)
    scores = adata.obsm[scores_key]
    if not isinstance(scores, pd.DataFrame):
        scores = pd.DataFrame(
            np.asarray(scores), index=adata.obs_names, columns=[str(i) for i in range(scores.shape[1])]
        )
    return scores.astype(np.float64)


def bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values, NaN kept."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return out


def trait_matrix(obs: pd.DataFrame, traits: Sequence[str]) -> pd.DataFrame:
    """Numeric traits as they are, booleans as 0/1, categories one-hot (one column ``trait: category`` each)."""
    cols = {}
    for trait in traits:
        if trait not in obs:
            avail = ", ".join(repr(c) for c in obs.columns) or "none"
            msg = f"Trait {trait!r} is not a column of `adata.obs` (columns: {avail})."
            raise KeyError(msg)
        s = obs[trait]
        if pd.api.types.is_bool_dtype(s):
            cols[trait] = s.astype(np.float64)
        elif pd.api.types.is_numeric_dtype(s) and not isinstance(s.dtype, pd.CategoricalDtype):
            cols[trait] = s.astype(np.float64)
        else:
            values = s.astype(object)
            cats = s.cat.categories if isinstance(s.dtype, pd.CategoricalDtype) else sorted(values.dropna().unique())
            for c in cats:
                if (values == c).any():
                    col = (values == c).astype(np.float64)
                    col[values.isna()] = np.nan
                    cols[f"{trait}: {c}"] = col
    return pd.DataFrame(cols, index=obs.index)


def module_trait_correlation(
    adata: AnnData,
    traits: Sequence[str],
    *,
    scores_key: str = SCORES_KEY,
    method: str = "pearson",
    key_added: str | None = None,
) -> pd.DataFrame:
    """Correlate module scores with cell traits: numeric ``obs`` columns and one-hot categories.

    As WGCNA's module-trait relationships: every (module, trait) pair gets a Pearson or Spearman correlation over
    the cells, its p-value, and a Benjamini-Hochberg FDR over all pairs. A categorical (or string) trait gives one
    0/1 column per category (``'trait: category'``); booleans are 0/1. Cells with a missing trait value are left out
    of that trait's tests.

    The p-values treat cells as independent observations: with thousands of cells nearly every correlation is
    significant, and cells of one donor are not independent. For a condition effect with biological replicates,
    test per-sample pseudobulk scores with :func:`~musegnn_sc.tl.differential_module_activity` (``sample_key=``).

    Parameters
    ----------
    adata
        AnnData with module scores (:func:`~musegnn_sc.tl.score_modules`) and the traits in ``obs``.
    traits
        ``obs`` columns.
    scores_key
        ``obsm`` key of the scores.
    method
        ``"pearson"`` or ``"spearman"``.
    key_added
        ``uns`` key of the result (default ``f"{scores_key}_traits"``).

    Returns
    -------
    Tidy DataFrame, one row per (module, trait): ``module``, ``trait``, ``correlation``, ``pvalue``, ``padj`` (BH)
    and ``n_cells``; also stored as ``uns[key_added]['table']`` with ``uns[key_added]['params']``.

    Examples
    --------
    >>> import musegnn_sc as msg
    >>> msg.tl.score_modules(adata, gdata)
    >>> res = msg.tl.module_trait_correlation(adata, ["condition", "n_counts"])
    >>> msg.pl.module_trait(adata)
    """
    if method not in ("pearson", "spearman"):
        msg = f"`method` must be 'pearson' or 'spearman', got {method!r}."
        raise ValueError(msg)
    if isinstance(traits, str):
        traits = [traits]
    scores = get_scores(adata, scores_key)
    T = trait_matrix(adata.obs, traits)
    if T.shape[1] == 0:
        msg = f"No usable trait among {list(traits)}: every categorical trait is empty."
        raise ValueError(msg)
    test = stats.pearsonr if method == "pearson" else stats.spearmanr
    rows, constant = [], []
    for trait in T.columns:
        t = T[trait].to_numpy()
        ok = np.isfinite(t)
        if ok.sum() < 3 or np.ptp(t[ok]) == 0:
            constant.append(trait)
            continue
        for module in scores.columns:
            s = scores[module].to_numpy()
            good = ok & np.isfinite(s)
            if good.sum() < 3 or np.ptp(s[good]) == 0:
                rows.append((module, trait, np.nan, np.nan, int(good.sum())))
                continue
            r, p = test(s[good], t[good])
            rows.append((module, trait, float(r), float(p), int(good.sum())))
    if constant:
        warnings.warn(
            f"Trait column(s) constant over the cells (or with fewer than 3 values) are left out: "
            f"{', '.join(map(repr, constant))}.",
            UserWarning,
            stacklevel=2,
        )
    out = pd.DataFrame(rows, columns=["module", "trait", "correlation", "pvalue", "n_cells"])
    out.insert(4, "padj", bh(out["pvalue"].to_numpy()))
    out.index = out.index.astype(str)
    key = key_added or f"{scores_key}_traits"
    adata.uns[key] = {"params": {"scores_key": scores_key, "method": method, "traits": list(traits)}, "table": out}
    _logging.logger.info("module-trait correlations in uns[%r]", key)
    return out
