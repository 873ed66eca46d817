"""Differential module activity between groups of cells (hdWGCNA's differential module eigengenes), per cell and per sample."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import stats

from musegnn_sc import _logging
from musegnn_sc.tl._module_traits import bh, get_scores
from musegnn_sc.tl._score_modules import SCORES_KEY


def _categories(adata: AnnData, key: str) -> pd.Series:
    if key not in adata.obs:
        avail = ", ".join(repr(c) for c in adata.obs.columns) or "none"
        msg = f"{key!r} is not a column of `adata.obs` (columns: {avail})."
        raise KeyError(msg)
    return adata.obs[key].astype(str).where(adata.obs[key].notna())


def differential_module_activity(
    adata: AnnData,
    groupby: str,
    *,
    reference: str = "rest",
    groups: Sequence[str] | None = None,
    sample_key: str | None = None,
    scores_key: str = SCORES_KEY,
    key_added: str | None = None,
) -> pd.DataFrame:
    """Test module scores between groups of cells: per cell (Wilcoxon rank-sum) and per sample (pseudobulk Welch t).

    For each group of ``obs[groupby]`` (or those in ``groups``) and each module, the scores of the group's cells are
    compared with those of ``reference`` (another group, or ``"rest"``: every other cell) by a two-sided Wilcoxon
    rank-sum test, as hdWGCNA's differential module eigengenes. Cells are not independent replicates: with several
    samples (donors, animals) per group, pass ``sample_key`` to also test the per-sample mean scores (pseudobulk)
    with Welch's two-sample t-test, the honest test of a condition effect. Every sample must lie in one group.

    Parameters
    ----------
    adata
        AnnData with module scores (:func:`~musegnn_sc.tl.score_modules`).
    groupby
        ``obs`` column of the groups (condition, cell type, ...).
    reference
        Group compared against, or ``"rest"``.
    groups
        Groups to test (default: every group but the reference).
    sample_key
        ``obs`` column of the biological samples, for the pseudobulk test.
    scores_key
        ``obsm`` key of the scores.
    key_added
        ``uns`` key of the result (default ``f"{scores_key}_{groupby}"``).

    Returns
    -------
    Tidy DataFrame, one row per (group, module): ``group``, ``reference``, ``module``, ``n_cells_group``,
    ``n_cells_reference``, ``mean_group``, ``mean_reference``, ``delta`` (difference of mean scores), ``auc``
    (probability that a group cell scores above a reference cell, the rank-sum effect size), ``pvalue`` and
    ``padj`` (BH over all rows); with ``sample_key`` also ``n_samples_group``, ``n_samples_reference``,
    ``delta_samples`` (difference of mean per-sample scores), ``t_samples``, ``pvalue_samples`` and
    ``padj_samples``. Stored as ``uns[key_added]['table']`` with ``uns[key_added]['params']``.

    Examples
    --------
    >>> import musegnn_sc as msg
    >>> res = msg.tl.differential_module_activity(adata, "condition", reference="ctrl", sample_key="donor")
    >>> res.sort_values("padj_samples").head()
    """
    scores = get_scores(adata, scores_key)
    labels = _categories(adata, groupby)
    present = list(dict.fromkeys(labels.dropna()))
    if hasattr(adata.obs[groupby], "cat"):
        present = [str(c) for c in adata.obs[groupby].cat.categories if str(c) in set(present)]
    reference = str(reference)  # group labels are compared as strings (integer or leiden labels alike)
    if reference != "rest" and reference not in present:
        msg = f"`reference={reference!r}` is not a group of `obs[{groupby!r}]` (groups: {', '.join(present)})."
        raise ValueError(msg)
    if groups is None:
        groups = [g for g in present if g != reference]
    else:
        groups = [str(g) for g in ([groups] if isinstance(groups, str) else groups)]
        unknown = [g for g in groups if g not in present]
        if unknown:
            msg = f"Group(s) {', '.join(map(repr, unknown))} not in `obs[{groupby!r}]` (groups: {', '.join(present)})."
            raise ValueError(msg)
        if reference in groups:
            msg = f"`groups` contains the reference {reference!r}."
            raise ValueError(msg)
    if not groups or (reference == "rest" and len(present) < 2):
        msg = f"`obs[{groupby!r}]` needs at least two groups to compare (it has: {', '.join(present) or 'none'})."
        raise ValueError(msg)
    sample_means = None
    if sample_key is not None:
        samples = _categories(adata, sample_key)
        per_sample = pd.DataFrame({"sample": samples, "group": labels}).dropna()
        n_groups = per_sample.groupby("sample")["group"].nunique()
        mixed = n_groups.index[n_groups > 1].tolist()
        if mixed:
            msg = (
                f"Sample(s) {', '.join(map(repr, mixed[:5]))} of `obs[{sample_key!r}]` contain cells of several groups "
                f"of `obs[{groupby!r}]`: a pseudobulk test needs each sample in one group (or test per cell without "
                "`sample_key`)."
            )
            raise ValueError(msg)
        sample_group = per_sample.groupby("sample")["group"].first()
        sample_means = scores.loc[per_sample.index].groupby(per_sample["sample"].to_numpy()).mean()
    rows, few = [], []
    lab = labels.to_numpy()
    for g in groups:
        in_g = lab == g
        in_ref = (lab != g) & pd.notna(lab) if reference == "rest" else lab == reference
        if in_g.sum() == 0 or in_ref.sum() == 0:
            continue
        if sample_means is not None:
            s_g = sample_group.index[sample_group == g]
            s_r = sample_group.index[(sample_group != g) if reference == "rest" else (sample_group == reference)]
            if len(s_g) < 2 or len(s_r) < 2:
                few.append(f"{g} ({len(s_g)} vs {len(s_r)} samples)")
        for module in scores.columns:
            x = scores[module].to_numpy()[in_g]
            y = scores[module].to_numpy()[in_ref]
            x, y = x[np.isfinite(x)], y[np.isfinite(y)]
            u, p = stats.mannwhitneyu(x, y, alternative="two-sided")
            row = {
                "group": g,
                "reference": reference,
                "module": str(module),
                "n_cells_group": len(x),
                "n_cells_reference": len(y),
                "mean_group": float(x.mean()),
                "mean_reference": float(y.mean()),
                "delta": float(x.mean() - y.mean()),
                "auc": float(u / (len(x) * len(y))),
                "pvalue": float(p),
            }
            if sample_means is not None:
                a = sample_means.loc[s_g, module].to_numpy()
                b = sample_means.loc[s_r, module].to_numpy()
                t, pt = (np.nan, np.nan)
                if len(a) >= 2 and len(b) >= 2:
                    t, pt = stats.ttest_ind(a, b, equal_var=False)
                row.update(
                    {
                        "n_samples_group": len(a),
                        "n_samples_reference": len(b),
                        "delta_samples": float(a.mean() - b.mean()) if len(a) and len(b) else np.nan,
                        "t_samples": float(t),
                        "pvalue_samples": float(pt),
                    }
                )
            rows.append(row)
    if few:
        warnings.warn(
            "The pseudobulk test needs at least 2 samples on each side; it is NaN for: " + ", ".join(few) + ".",
            UserWarning,
            stacklevel=2,
        )
    out = pd.DataFrame(rows)
    out.insert(out.columns.get_loc("pvalue") + 1, "padj", bh(out["pvalue"].to_numpy()))
    if sample_means is not None:
        out["padj_samples"] = bh(out["pvalue_samples"].to_numpy())
    out.index = out.index.astype(str)
    key = key_added or f"{scores_key}_{groupby}"
    params = {"groupby": groupby, "reference": reference, "groups": list(groups), "scores_key": scores_key}
    if sample_key is not None:
        params["sample_key"] = sample_key
    adata.uns[key] = {"params": params, "table": out}
    _logging.logger.info("differential module activity in uns[%r]", key)
    return out
