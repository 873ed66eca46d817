"""Gene-pair prediction from gene embeddings (Gene2vec's gene-gene interaction task, gene-embedding benchmarks)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData

from musegnn_sc import _logging as logg
from musegnn_sc._keys import EMBEDDING

from ._coherence import gene_vectors

PairFeatures = Literal["symmetric", "sum"]


def _as_pairs(pairs, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two gene columns and binary labels from a DataFrame (first two columns) or a sequence of pairs."""
    if isinstance(pairs, pd.DataFrame):
        if pairs.shape[1] < 2:
            msg = f"`pairs` needs two gene columns, it has {pairs.shape[1]} column(s)."
            raise ValueError(msg)
        if isinstance(labels, str):
            if labels not in pairs.columns:
                msg = f"`labels={labels!r}` is not a column of `pairs` (columns: {list(pairs.columns)})."
                raise KeyError(msg)
            labels = pairs[labels].to_numpy()
        a = pairs.iloc[:, 0].astype(str).to_numpy()
        b = pairs.iloc[:, 1].astype(str).to_numpy()
    else:
        arr = np.asarray(list(pairs), dtype=object)
        if arr.ndim != 2 or arr.shape[1] != 2:
            msg = f"`pairs` must be a DataFrame or a sequence of (gene, gene) pairs; got an array of shape {arr.shape}."
            raise ValueError(msg)
        a, b = arr[:, 0].astype(str), arr[:, 1].astype(str)
    if isinstance(labels, str):
        msg = "`labels` given as a column name needs `pairs` as a DataFrame."
        raise TypeError(msg)
    y = pd.Series(np.asarray(labels).ravel())
    if len(y) != len(a):
        msg = f"`labels` has {len(y)} value(s) for {len(a)} pair(s); give one label per pair."
        raise ValueError(msg)
    if y.isna().any():
        msg = f"`labels` has {int(y.isna().sum())} missing value(s); drop those pairs first."
        raise ValueError(msg)
    values = pd.unique(y)
    if y.dtype == bool or set(values) <= {0, 1}:
        y = y.astype(bool).to_numpy()
    else:
        msg = f"`labels` must be binary (True/False or 1/0), got values {list(values[:5])}."
        raise ValueError(msg)
    return a, b, y


def _pair_matrix(va: np.ndarray, vb: np.ndarray, kind: str) -> np.ndarray:
    """Order-invariant features of gene pairs from the two genes' vectors (rows of ``va`` and ``vb``)."""
    if kind == "sum":
        return va + vb
    if kind == "symmetric":
        return np.hstack([va + vb, va * vb, np.abs(va - vb)])
    msg = f"`pair_features` must be 'symmetric' or 'sum', got {kind!r}."
    raise ValueError(msg)


def expression_vectors(
    mdata: MuData,
    genes: Sequence[str],
    *,
    mods: Sequence[str] | None = None,
    layer: str | None = None,
    n_components: int = 50,
) -> np.ndarray:
    """Raw-expression gene vectors: per dataset, the top principal components of the genes' expression profiles.

    Each gene's profile over a dataset's cells is log1p of counts per 10,000, standardised; the genes x cells matrix is
    reduced by a truncated SVD to ``n_components`` scores (inner products of profiles, i.e. correlations, are kept),
    scaled to unit root mean square. Datasets are concatenated; a gene absent from a dataset gets zeros there.
    """
    from musegnn_sc._symbols import var_positions
    from musegnn_sc._validate import resolve_mods

    from ._function import _expression_profiles

    genes = np.asarray(genes).astype(str)
    blocks = []
    for name in resolve_mods(mdata, mods):
        ad = mdata.mod[name]
        pos = var_positions(ad, genes)
        found = np.flatnonzero(pos >= 0)
        block = np.zeros((len(genes), 0))
        if len(found) >= 2:
            prof = _expression_profiles(ad, ad.var_names[pos[found]].to_numpy(), layer)
            k = int(min(n_components, prof.shape[0] - 1, prof.shape[1] - 1))
            if k >= 1:
                U, S, _ = np.linalg.svd(prof, full_matrices=False)
                scores = U[:, :k] * S[:k]
                rms = float(np.sqrt(np.mean(scores**2)))
                block = np.zeros((len(genes), k))
                block[found] = scores / rms if rms > 0 else scores
        blocks.append(block)
    out = np.hstack(blocks)
    if out.shape[1] == 0:
        msg = "None of the pairs' genes is found in the MuData's modalities (by `var_names` or graph symbols)."
        raise ValueError(msg)
    return out


def _cv_logistic(X: np.ndarray, y: np.ndarray, folds: list, C: float, seed: int) -> tuple[dict, list[dict]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    per_fold = []
    for k, (train, test) in enumerate(folds):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed))
        clf.fit(X[train], y[train])
        p = clf.predict_proba(X[test])[:, 1]
        auroc, auprc = float(roc_auc_score(y[test], p)), float(average_precision_score(y[test], p))
        per_fold.append({"fold": k, "auroc": auroc, "auprc": auprc})
    df = pd.DataFrame(per_fold)
    summary = {
        "auroc": float(df["auroc"].mean()),
        "auroc_std": float(df["auroc"].std(ddof=1)),
        "auprc": float(df["auprc"].mean()),
        "auprc_std": float(df["auprc"].std(ddof=1)),
    }
    return summary, per_fold


def predict_gene_pairs(
    gdata: AnnData,
    pairs: pd.DataFrame | Sequence[tuple[str, str]],
    labels: Sequence[bool] | np.ndarray | str,
    *,
    mdata: MuData | None = None,
    pair_features: PairFeatures = "symmetric",
    n_splits: int = 5,
    C: float = 1.0,
    use_rep: str = EMBEDDING,
    gene_key: str = "gene",
    mods: Sequence[str] | None = None,
    layer: str | None = None,
    n_components: int = 50,
    seed: int = 0,
) -> pd.DataFrame:
    """Predict a gene-pair label (interaction, synthetic lethality, TF-target, ...) from the two genes' vectors.

    The gene-pair task of Gene2vec (gene-gene interactions) and of the recent gene-embedding benchmarks: each pair is
    represented by features of its two gene vectors, and a logistic regression (standardised features, L2 penalty
    ``C``) is cross-validated over pairs with stratified ``n_splits`` folds. Each gene is one vector: the mean
    direction of its rows across datasets (as :func:`~musegnn_sc.tl.gene_set_coherence`), so an external embedding
    (:func:`musegnn_sc.io.read_gene_embedding`) and a MuSe-GNN embedding are scored alike. Pairs with a gene that is
    not embedded are dropped (a warning gives the count).

    Pair features (``pair_features``), both unchanged when the two genes are swapped:

    - ``'symmetric'`` (default): the concatenation of the sum, the element-wise product and the absolute difference
      of the two vectors. The product sums to the cosine similarity, so a linear classifier can use how similar the
      two genes are, as well as what kind of genes they are;
    - ``'sum'``: the sum of the two vectors, the representation of Zhong et al. (2025). It says what kind of genes
      the pair holds, but a linear classifier cannot read the genes' similarity from it (the benchmark used a
      kernel SVM).

    With ``mdata``, a raw-expression baseline is scored on the same pairs and folds: gene vectors from expression
    (per dataset, the ``n_components`` leading principal components of the genes' standardised log-normalised
    profiles over cells, concatenated over datasets).

    Parameters
    ----------
    gdata
        Gene-level AnnData (one row per dataset and gene, or per gene).
    pairs
        A DataFrame whose first two columns are the genes of each pair, or a sequence of ``(gene, gene)`` tuples.
    labels
        One binary label per pair (``True``/``1`` for a positive pair), or the name of a column of ``pairs``.
    mdata
        MuData with raw counts, for the raw-expression baseline.
    pair_features
        ``'symmetric'`` or ``'sum'`` (see above).
    n_splits
        Cross-validation folds (each class needs at least this many pairs).
    C
        Inverse L2 regularisation strength of the logistic regression.
    use_rep
        ``gdata.obsm`` key of the embedding.
    gene_key
        ``gdata.obs`` column of gene symbols.
    mods
        Modalities of ``mdata`` used by the baseline (default: all).
    layer
        Layer of ``mdata``'s modalities with raw counts (``None``: ``X``).
    n_components
        Principal components per dataset of the raw-expression vectors.
    seed
        Random state of the folds and of the classifier.

    Returns
    -------
    One row per feature set (``'embedding'``, and ``'raw_expression'`` with ``mdata``): ``auroc`` and ``auprc``
    (mean over folds) with ``auroc_std`` and ``auprc_std`` (standard deviation over folds), ``prevalence`` (the
    fraction of positive pairs, the AUPRC of a random ranking), ``n_pairs``, ``n_positive`` and ``n_genes``.
    ``.attrs`` holds ``per_fold`` (records with ``features``, ``fold``, ``auroc`` and ``auprc``; make a table with
    ``pd.DataFrame(res.attrs['per_fold'])``), ``n_dropped`` (pairs with a gene outside the embedding) and ``params``.

    Examples
    --------
    >>> import musegnn_sc as msg
    >>> gdata = msg.datasets.toy_gdata()
    >>> truth = gdata.uns["toy_truth"]["modules"].set_index("gene")["module"]
    >>> genes = truth.index.to_numpy()
    >>> pairs = [(genes[i], genes[i + 1]) for i in range(0, len(genes) - 1)]
    >>> labels = [truth[a] == truth[b] for a, b in pairs]
    >>> msg.tl.predict_gene_pairs(gdata, pairs, labels, n_splits=3)["auroc"]  # doctest: +SKIP
    """
    from sklearn.model_selection import StratifiedKFold

    if n_splits < 2:
        msg = f"`n_splits` must be at least 2, got {n_splits}."
        raise ValueError(msg)
    if C <= 0:
        msg = f"`C` must be positive, got {C}."
        raise ValueError(msg)
    if pair_features not in ("symmetric", "sum"):
        msg = f"`pair_features` must be 'symmetric' or 'sum', got {pair_features!r}."
        raise ValueError(msg)
    a, b, y = _as_pairs(pairs, labels)
    t0 = logg.start(f"predicting {len(a)} gene pairs")
    vec = gene_vectors(gdata, use_rep=use_rep, gene_key=gene_key)
    index = pd.Index(vec.index)
    ia, ib = index.get_indexer(a), index.get_indexer(b)
    known = (ia >= 0) & (ib >= 0)
    n_dropped = int((~known).sum())
    if n_dropped:
        unknown = pd.unique(np.r_[a[ia < 0], b[ib < 0]])
        shown = ", ".join(map(repr, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
        warnings.warn(
            f"{n_dropped} of {len(a)} pair(s) are dropped: {len(unknown)} of their genes are not in the embedding "
            f"({shown}). Check that pair genes use the embedding's identifiers (`gdata.obs[{gene_key!r}]`).",
            UserWarning,
            stacklevel=2,
        )
    a, b, y, ia, ib = a[known], b[known], y[known], ia[known], ib[known]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if min(n_pos, n_neg) < n_splits:
        msg = (
            f"{n_pos} positive and {n_neg} negative pair(s) have both genes embedded; each class needs at least "
            f"n_splits={n_splits}. Add pairs, check gene identifiers, or lower `n_splits`."
        )
        raise ValueError(msg)
    folds = list(StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    V = vec.to_numpy()
    base = {"prevalence": n_pos / len(y), "n_pairs": len(y), "n_positive": n_pos}
    rows, per_fold = [], []
    sets = [("embedding", V, ia, ib)]
    if mdata is not None:
        genes = pd.unique(np.r_[a, b])
        R = expression_vectors(mdata, genes, mods=mods, layer=layer, n_components=n_components)
        pos = pd.Index(genes)
        sets.append(("raw_expression", R, pos.get_indexer(a), pos.get_indexer(b)))
    n_genes = len(pd.unique(np.r_[a, b]))
    for name, M, ja, jb in sets:
        X = _pair_matrix(M[ja], M[jb], pair_features)
        summary, folds_res = _cv_logistic(X, y, folds, C, seed)
        rows.append({"features": name, **summary, **base, "n_genes": n_genes})
        per_fold += [{"features": name, **f} for f in folds_res]
    res = pd.DataFrame(rows).set_index("features")
    # plain records, not a DataFrame: pandas compares attrs when printing and concatenating
    res.attrs["per_fold"] = per_fold
    res.attrs["n_dropped"] = n_dropped
    res.attrs["params"] = {"pair_features": pair_features, "n_splits": n_splits, "C": C, "use_rep": use_rep}
    logg.finish(
        "; ".join(f"{r.Index}: AUROC {r.auroc:.3f}, AUPRC {r.auprc:.3f}" for r in res.itertuples()),
        t0,
    )
    return res
