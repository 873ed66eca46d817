"""Gene-level look-ups on MuSe-GNN embeddings: one vector per gene, and nearest genes by cosine similarity."""

from __future__ import annotations

import difflib

import numpy as np
import pandas as pd
from anndata import AnnData

from musegnn_sc._keys import EMBEDDING


def _embedding(gdata: AnnData, use_rep: str) -> np.ndarray:
    if use_rep not in gdata.obsm:
        avail = ", ".join(repr(k) for k in gdata.obsm) or "none"
        msg = (
            f"`gdata.obsm[{use_rep!r}]` not found (obsm keys: {avail}). Pass the gene-level AnnData returned by "
            "`msg.tl.train_musegnn` (or `model.get_gene_embeddings()`), or the key of the embedding as `use_rep`."
        )
        raise KeyError(msg)
    return np.asarray(gdata.obsm[use_rep], dtype=np.float64)


def _gene_column(gdata: AnnData) -> np.ndarray:
    if "gene" in gdata.obs:
        return gdata.obs["gene"].astype(str).to_numpy()
    return gdata.obs_names.astype(str).to_numpy()


def _unit_rows(X: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(X, axis=1, keepdims=True)
    norm[norm == 0] = 1.0
    return X / norm


def aggregate_genes(gdata: AnnData, *, use_rep: str = EMBEDDING, normalize: bool = True) -> AnnData:
    """One embedding per gene: the mean of its rows over the datasets where it is a graph node.

    MuSe-GNN gives a gene one embedding per dataset (its function may differ between tissues and omics). For
    look-ups across the whole collection this averages them; with ``normalize`` every row is scaled to unit length
    first, so that each dataset counts equally in the cosine geometry the model is trained in.

    Parameters
    ----------
    gdata
        Gene-level AnnData from :func:`musegnn_sc.tl.train_musegnn` (one row per dataset and gene, ``obs['gene']``).
    use_rep
        ``obsm`` key of the embedding.
    normalize
        Scale rows to unit length before averaging.

    Returns
    -------
    AnnData with one row per gene (index: gene name, sorted by first appearance), the mean embedding in ``X`` and
    ``obsm[use_rep]``, and ``obs`` columns ``n_datasets`` (number of rows averaged), ``datasets`` and ``omics``
    (``';'``-joined, when ``gdata.obs`` has them).

    Examples
    --------
    >>> import musegnn_sc as msg
    >>> gdata = msg.datasets.toy_gdata()
    >>> genes = msg.tl.aggregate_genes(gdata)
    >>> genes.obs["n_datasets"].value_counts()
    """
    X = _embedding(gdata, use_rep)
    if normalize:
        X = _unit_rows(X)
    genes = _gene_column(gdata)
    codes, uniques = pd.factorize(genes)
    n = len(uniques)
    counts = np.bincount(codes, minlength=n)
    sums = np.zeros((n, X.shape[1]))
    np.add.at(sums, codes, X)
    mean = (sums / counts[:, None]).astype(np.float32)
    obs = pd.DataFrame({"n_datasets": counts.astype(np.int64)}, index=pd.Index(uniques.astype(str), name=None))
    for col in ("dataset", "omics"):
        if col in gdata.obs:
            vals = gdata.obs[col].astype(str).to_numpy()
            joined = pd.Series(vals).groupby(codes).agg(lambda s: ";".join(dict.fromkeys(s)))
            obs[f"{col}s" if col == "dataset" else col] = joined.reindex(range(n)).to_numpy()
    var = pd.DataFrame(index=[f"{use_rep}_{k}" for k in range(mean.shape[1])])
    out = AnnData(X=mean.copy(), obs=obs, var=var)
    out.obsm[use_rep] = mean
    return out


def similar_genes(
    gdata: AnnData,
    gene: str,
    n: int = 20,
    *,
    use_rep: str = EMBEDDING,
    dataset: str | None = None,
) -> pd.DataFrame:
    """The genes whose embeddings are most similar (cosine) to ``gene``'s.

    Parameters
    ----------
    gdata
        Gene-level AnnData: per dataset and gene (from :func:`musegnn_sc.tl.train_musegnn`) or per gene (from
        :func:`aggregate_genes`).
    gene
        Query gene name.
    n
        Number of genes to return.
    use_rep
        ``obsm`` key of the embedding.
    dataset
        With per-dataset rows: ``None`` compares genes aggregated over datasets (:func:`aggregate_genes`); a dataset
        name takes the query gene's row of that dataset and compares it with every (dataset, gene) row, so that the
        same gene in other datasets appears too.

    Returns
    -------
    DataFrame sorted by decreasing ``cosine``, with columns ``gene`` and ``cosine`` (and ``dataset`` with
    ``dataset=``; ``n_datasets`` for aggregated genes), without the query row itself.

    Examples
    --------
    >>> import musegnn_sc as msg
    >>> gdata = msg.datasets.toy_gdata()
    >>> msg.tl.similar_genes(gdata, "GENE0001", n=5)  # aggregated over datasets
    >>> msg.tl.similar_genes(gdata, "GENE0001", n=5, dataset="rna_heart_1")  # one dataset's row vs every row
    """
    if n < 1:
        msg = f"`n` must be at least 1, got {n}."
        raise ValueError(msg)
    genes = _gene_column(gdata)
    per_dataset = "dataset" in gdata.obs and not pd.Index(genes).is_unique
    if dataset is not None:
        if "dataset" not in gdata.obs:
            msg = "`dataset=` needs per-dataset rows with `obs['dataset']` (the output of `msg.tl.train_musegnn`)."
            raise ValueError(msg)
        table = gdata
        ds = gdata.obs["dataset"].astype(str).to_numpy()
        hit = np.flatnonzero((genes == gene) & (ds == str(dataset)))
        if len(hit) == 0:
            avail = sorted(set(ds[genes == gene]))
            msg = f"Gene {gene!r} is not a node of dataset {dataset!r}" + (
                f" (it is in: {', '.join(avail)})." if avail else "."
            )
            raise KeyError(msg)
    else:
        table = aggregate_genes(gdata, use_rep=use_rep) if per_dataset else gdata
        genes = _gene_column(table) if per_dataset else genes
        hit = np.flatnonzero(genes == gene)
        if len(hit) == 0:
            names = list(dict.fromkeys(genes))
            close = [g for g in names if g.upper() == gene.upper()] or difflib.get_close_matches(gene, names, n=3)
            msg = f"Gene {gene!r} not found" + (f"; did you mean {', '.join(map(repr, close))}?" if close else ".")
            raise KeyError(msg)
    X = _unit_rows(_embedding(table, use_rep))
    q = int(hit[0])
    cos = X @ X[q]
    order = [k for k in np.argsort(-cos, kind="stable") if k != q][:n]
    out = pd.DataFrame({"gene": _gene_column(table)[order]})
    if dataset is not None:
        out["dataset"] = table.obs["dataset"].astype(str).to_numpy()[order]
    if "n_datasets" in table.obs:
        out["n_datasets"] = table.obs["n_datasets"].to_numpy()[order]
    out["cosine"] = cos[order]
    return out.reset_index(drop=True)
