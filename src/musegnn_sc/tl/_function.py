"""Gene function prediction from embeddings with a k-NN classifier (the paper's section 4.4, Table 2)."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData

from musegnn_sc import _logging as logg
from musegnn_sc._keys import EMBEDDING

from ._coherence import gene_vectors


def _as_labels(labels, universe: pd.Index) -> pd.Series:
    """Gene -> label over ``universe``. A collection of genes (or a file, one per line) marks positives vs the rest."""
    if isinstance(labels, str | os.PathLike):
        path = Path(labels)
        if not path.is_file():
            msg = (
                f"Label file {str(path)!r} does not exist. Pass a path, a gene list, or a pandas Series gene -> label."
            )
            raise FileNotFoundError(msg)
        labels = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if isinstance(labels, pd.Series):
        lab = labels.copy()
        lab.index = lab.index.astype(str)
        lab = lab[~lab.index.duplicated()].dropna()
        return lab.reindex(universe).dropna().astype(str)
    if isinstance(labels, Mapping):
        return _as_labels(pd.Series(dict(labels)), universe)
    if isinstance(labels, Iterable):
        positives = {str(g) for g in labels}
        return pd.Series(np.where(universe.isin(positives), "positive", "negative"), index=universe)
    msg = f"`labels` must be a Series/dict gene -> label, a list of positive genes or a file path, got {type(labels).__name__}."
    raise TypeError(msg)


def _expression_profiles(adata: AnnData, genes: np.ndarray, layer: str | None) -> np.ndarray:
    """Genes x cells: log1p of counts per 10,000, centred and scaled per gene (raw-expression features)."""
    from scipy import sparse

    from musegnn_sc._validate import get_matrix

    X = get_matrix(adata, layer)
    depth = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
    depth[depth == 0] = 1.0
    from musegnn_sc._symbols import var_positions

    cols = var_positions(adata, genes)
    if (cols < 0).any():
        bad = np.asarray(genes)[cols < 0][:5].tolist()
        msg = f"Genes {bad} are neither `var_names` nor graph gene symbols of the dataset; pass the MuData of `gdata`."
        raise KeyError(msg)
    sub = X[:, cols]
    sub = sub.toarray() if sparse.issparse(sub) else np.asarray(sub)
    prof = np.log1p(sub.astype(np.float64) / depth[:, None] * 1e4).T
    prof -= prof.mean(axis=1, keepdims=True)
    sd = prof.std(axis=1, keepdims=True)
    sd[sd == 0] = 1.0
    return prof / sd


def _cv_knn(X: np.ndarray, y: np.ndarray, folds: list, k: int) -> dict[str, float]:
    """Accuracy, balanced accuracy and AUROC of a cosine k-NN over given folds; mean and sd over folds."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
    from sklearn.neighbors import KNeighborsClassifier

    classes = np.unique(y)
    acc, bacc, auc = [], [], []
    for train, test in folds:
        clf = KNeighborsClassifier(n_neighbors=min(k, len(train)), metric="cosine", algorithm="brute")
        clf.fit(X[train], y[train])
        proba = clf.predict_proba(X[test])
        pred = clf.classes_[proba.argmax(axis=1)]
        acc.append(accuracy_score(y[test], pred))
        bacc.append(balanced_accuracy_score(y[test], pred))
        if len(np.unique(y[test])) < 2:
            auc.append(np.nan)
        elif len(classes) == 2:
            auc.append(roc_auc_score(y[test] == clf.classes_[1], proba[:, 1]))
        else:
            auc.append(roc_auc_score(y[test], proba, multi_class="ovr", average="macro", labels=clf.classes_))
    return {
        "accuracy": float(np.mean(acc)),
        "accuracy_std": float(np.std(acc)),
        "balanced_accuracy": float(np.mean(bacc)),
        "auroc": float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan"),
        "auroc_std": float(np.nanstd(auc)) if np.isfinite(auc).any() else float("nan"),
    }


def predict_gene_function(
    gdata: AnnData,
    labels: pd.Series | Mapping[str, str] | Collection[str] | str | os.PathLike,
    *,
    mdata: MuData | None = None,
    k: int = 10,
    n_splits: int = 5,
    use_rep: str = EMBEDDING,
    gene_key: str = "gene",
    dataset_key: str = "dataset",
    layer: str | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Cross-validated k-NN prediction of gene labels from the embedding, next to a raw-expression baseline.

    The paper's gene function experiment (section 4.4, Table 2: dosage-sensitive vs insensitive genes, k-NN on
    MuSe-GNN embeddings vs on raw data). Genes are classified by their ``k`` nearest labelled genes (cosine), with
    stratified ``n_splits``-fold cross-validation over genes, so a gene is never its own neighbour. Three feature
    sets are compared:

    - ``'embedding'``: each dataset's rows of ``gdata`` (one result per dataset);
    - ``'raw_expression'`` (when ``mdata`` is given): the same genes of the same dataset represented by their
      expression profile across the dataset's cells (log1p counts per 10,000, standardised per gene; cosine k-NN on
      it is k-NN on profile correlation), the same folds;
    - ``'embedding_gene_mean'``: one vector per gene averaged over datasets (the mean direction of its unit-normalised rows; dataset
      ``'all'``).

    Parameters
    ----------
    gdata
        Gene-level AnnData (one row per dataset and gene).
    labels
        A :class:`pandas.Series` or dict gene -> label (any number of classes), or a collection of "positive" genes
        (or a text file with one gene per line) contrasted with every other embedded gene.
    mdata
        The MuData of the datasets, for the raw-expression baseline (raw counts in ``X`` or ``layer``).
    k
        Neighbours of the classifier.
    n_splits
        Cross-validation folds; classes with fewer labelled genes in a dataset are dropped there.
    use_rep
        ``gdata.obsm`` key of the embedding.
    gene_key, dataset_key
        ``gdata.obs`` columns of gene symbols and dataset names.
    layer
        Layer of ``mdata``'s modalities with raw counts (``None``: ``X``).
    seed
        Random state of the folds.

    Returns
    -------
    One row per feature set and dataset: ``accuracy`` (and ``accuracy_std`` over folds), ``balanced_accuracy``,
    ``auroc`` (binary, or one-vs-rest macro average; ``auroc_std``), ``majority_accuracy`` (accuracy of always
    predicting the largest class: the floor to beat), ``n_genes`` and ``n_classes``. ``.attrs['summary']`` averages
    each feature set over datasets.

    Examples
    --------
    Transcription factors (e.g. the list of Lambert et al. 2018) against every other gene, from the embedding and
    from each dataset's expression profiles:

    >>> import musegnn_sc as msg
    >>> tfs = msg.datasets.shared_data("human_TFs_lambert2018_v1.01.txt").read_text().split()  # doctest: +SKIP
    >>> res = msg.tl.predict_gene_function(gdata, tfs, mdata=mdata, k=10)  # doctest: +SKIP
    >>> res.attrs["summary"]  # doctest: +SKIP
    """
    from sklearn.model_selection import StratifiedKFold

    for col in (gene_key, dataset_key):
        if col not in gdata.obs:
            msg = f"`gdata.obs[{col!r}]` is missing; pass the gene-level AnnData from `msg.tl.train_musegnn`."
            raise KeyError(msg)
    if use_rep not in gdata.obsm:
        msg = f"`gdata.obsm[{use_rep!r}]` is missing; pass the embedding's key as `use_rep=`."
        raise KeyError(msg)
    if k < 1 or n_splits < 2:
        msg = f"`k` must be >= 1 and `n_splits` >= 2, got k={k}, n_splits={n_splits}."
        raise ValueError(msg)
    t0 = logg.start("predicting gene labels with k-NN")
    genes = np.asarray(gdata.obs[gene_key]).astype(str)
    datasets = np.asarray(gdata.obs[dataset_key]).astype(str)
    X = np.asarray(gdata.obsm[use_rep], dtype=np.float64)
    rows = []

    def _prepare(universe: pd.Index) -> tuple[pd.Series, list] | None:
        lab = _as_labels(labels, universe)
        counts = lab.value_counts()
        lab = lab[lab.isin(counts.index[counts >= n_splits])]
        if lab.nunique() < 2:
            return None
        cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        return lab, list(cv.split(np.zeros(len(lab)), lab.to_numpy()))

    for d in pd.unique(datasets):
        rows_d = np.flatnonzero(datasets == d)
        universe = pd.Index(genes[rows_d])
        prepared = _prepare(universe)
        if prepared is None:
            continue
        lab, folds = prepared
        y = lab.to_numpy()
        sel = rows_d[universe.get_indexer(lab.index)]
        base = {
            "dataset": d,
            "n_genes": len(y),
            "n_classes": int(lab.nunique()),
            "majority_accuracy": float(lab.value_counts(normalize=True).iloc[0]),
        }
        rows.append({"features": "embedding", **base, **_cv_knn(X[sel], y, folds, k)})
        if mdata is not None:
            if d not in mdata.mod:
                msg = f"Dataset {d!r} of `gdata` is not a modality of `mdata`; pass the MuData the embedding came from."
                raise KeyError(msg)
            prof = _expression_profiles(mdata.mod[d], lab.index.to_numpy(), layer)
            rows.append({"features": "raw_expression", **base, **_cv_knn(prof, y, folds, k)})
    vec = gene_vectors(gdata, use_rep=use_rep, gene_key=gene_key)
    prepared = _prepare(pd.Index(vec.index))
    if prepared is not None:
        lab, folds = prepared
        y = lab.to_numpy()
        Xg = vec.loc[lab.index].to_numpy()
        base = {
            "dataset": "all",
            "n_genes": len(y),
            "n_classes": int(lab.nunique()),
            "majority_accuracy": float(lab.value_counts(normalize=True).iloc[0]),
        }
        rows.append({"features": "embedding_gene_mean", **base, **_cv_knn(Xg, y, folds, k)})
    if not rows:
        msg = (
            f"No dataset has at least {n_splits} labelled genes in two classes. Check that label gene symbols match "
            "`gdata.obs[gene_key]` (species, case), or lower `n_splits`."
        )
        raise ValueError(msg)
    res = pd.DataFrame(rows)
    metric_cols = ["accuracy", "balanced_accuracy", "auroc", "majority_accuracy", "n_genes"]
    res.attrs["summary"] = res.groupby("features", sort=False)[metric_cols].mean()
    logg.finish(f"{len(res)} evaluations", t0)
    return res
