"""Gene-set coherence of an embedding: are genes of one pathway closer than random gene pairs?"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import pandas as pd
from anndata import AnnData

from musegnn_sc import _logging as logg
from musegnn_sc._genesets import as_gene_sets
from musegnn_sc._keys import EMBEDDING

from ._evaluate import roc_auc


def gene_vectors(gdata: AnnData, *, use_rep: str = EMBEDDING, gene_key: str = "gene") -> pd.DataFrame:
    """One unit vector per gene: the mean of the gene's unit-normalised rows (one per dataset), renormalised.

    A gene embedded in several datasets is represented by its average direction, so every gene counts once.
    """
    if use_rep not in gdata.obsm:
        avail = ", ".join(repr(k) for k in gdata.obsm) or "none"
        msg = f"`gdata.obsm[{use_rep!r}]` is missing (obsm keys: {avail}); pass the embedding's key as `use_rep=`."
        raise KeyError(msg)
    if gene_key not in gdata.obs:
        msg = f"`gdata.obs[{gene_key!r}]` is missing; pass the column holding gene symbols as `gene_key=`."
        raise KeyError(msg)
    X = np.asarray(gdata.obsm[use_rep], dtype=np.float64)
    norm = np.linalg.norm(X, axis=1, keepdims=True)
    norm[norm == 0] = 1.0
    df = pd.DataFrame(X / norm)
    df["__gene__"] = np.asarray(gdata.obs[gene_key]).astype(str)
    mean = df.groupby("__gene__", sort=True).mean()
    norm = np.linalg.norm(mean.to_numpy(), axis=1, keepdims=True)
    norm[norm == 0] = 1.0
    mean.index.name = None
    return pd.DataFrame(mean.to_numpy() / norm, index=mean.index)


def _bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values."""
    p = np.asarray(p, dtype=np.float64)
    n = len(p)
    if n == 0:
        return p
    order = np.argsort(p)
    adj = p[order] * n / np.arange(1, n + 1)
    adj = np.minimum.accumulate(adj[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(adj, 1.0)
    return out


def gene_set_coherence(
    gdata: AnnData,
    gene_sets: str | os.PathLike | Mapping[str, object],
    *,
    use_rep: str = EMBEDDING,
    gene_key: str = "gene",
    min_size: int = 5,
    max_size: int = 500,
    n_random: int = 20_000,
    seed: int = 0,
) -> pd.DataFrame:
    """How tightly an embedding groups the genes of each gene set (pathway), as Gene2vec's authors measured it.

    Each gene is represented once (the mean direction of its unit-normalised rows across datasets). For each
    set, the cosine similarities of all pairs of its embedded genes are compared with those of ``n_random`` random
    pairs of embedded genes: the AUROC is the probability that a within-set pair is more similar than a random
    pair (0.5 = no coherence, 1 = every within-set pair closer than every random pair). The one-sided Mann-Whitney
    p-value treats pairs as independent (they share genes), so read it as a ranking device, not an exact test.

    Parameters
    ----------
    gdata
        Gene-level AnnData (one row per dataset and gene).
    gene_sets
        GMT file (MSigDB, Enrichr) or a mapping of set name to genes.
    use_rep
        ``gdata.obsm`` key of the embedding.
    gene_key
        ``gdata.obs`` column of gene symbols.
    min_size, max_size
        Sets with fewer embedded genes than ``min_size`` or more than ``max_size`` are skipped.
    n_random
        Random gene pairs forming the background (shared by every set).
    seed
        Random seed of the background pairs.

    Returns
    -------
    One row per tested set, best AUROC first: ``n_genes`` (set size), ``n_found`` (embedded), ``n_pairs``,
    ``auroc``, ``mean_cos_within``, ``mean_cos_random``, ``pval``, ``fdr`` (Benjamini-Hochberg).
    ``.attrs['n_genes_embedded']`` is the size of the universe.

    Examples
    --------
    >>> import musegnn_sc as msg
    >>> gdata = msg.datasets.toy_gdata()
    >>> truth = gdata.uns["toy_truth"]["modules"]  # columns gene, module
    >>> sets = truth.groupby("module")["gene"].apply(list).to_dict()
    >>> msg.tl.gene_set_coherence(gdata, sets)[["n_found", "auroc", "fdr"]]

    With real gene symbols, pass a GMT file, e.g. MSigDB Hallmark:

    >>> msg.tl.gene_set_coherence(gdata, "h.all.v7.5.1.symbols.gmt", min_size=5)  # doctest: +SKIP
    """
    from scipy.stats import mannwhitneyu

    if min_size < 2:
        msg = f"`min_size` must be at least 2 (a set needs a pair of genes), got {min_size}."
        raise ValueError(msg)
    sets = as_gene_sets(gene_sets)
    t0 = logg.start(f"scoring coherence of {len(sets)} gene sets")
    vec = gene_vectors(gdata, use_rep=use_rep, gene_key=gene_key)
    V = vec.to_numpy()
    n = V.shape[0]
    if n < 3:
        msg = f"Only {n} distinct gene(s) are embedded; gene-set coherence needs at least 3."
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n, n_random)
    b = (a + rng.integers(1, n, n_random)) % n  # never a == b
    background = np.einsum("ij,ij->i", V[a], V[b])
    pos = pd.Index(vec.index)
    rows = []
    for name, genes in sets.items():
        idx = pos.get_indexer(genes)
        idx = np.unique(idx[idx >= 0])
        if not min_size <= len(idx) <= max_size:
            continue
        S = V[idx] @ V[idx].T
        within = S[np.triu_indices(len(idx), k=1)]
        labels = np.r_[np.ones(within.size, bool), np.zeros(background.size, bool)]
        auc = roc_auc(labels, np.r_[within, background])
        pval = float(mannwhitneyu(within, background, alternative="greater", method="asymptotic").pvalue)
        rows.append(
            {
                "gene_set": name,
                "n_genes": len(genes),
                "n_found": len(idx),
                "n_pairs": int(within.size),
                "auroc": auc,
                "mean_cos_within": float(within.mean()),
                "mean_cos_random": float(background.mean()),
                "pval": pval,
            }
        )
    cols = ["n_genes", "n_found", "n_pairs", "auroc", "mean_cos_within", "mean_cos_random", "pval", "fdr"]
    if not rows:
        from musegnn_sc._symbols import identifier_hint

        set_genes = [g for genes in sets.values() for g in genes]
        logg.logger.warning(
            "No gene set has between %d and %d embedded genes; likely cause: %s.",
            min_size,
            max_size,
            identifier_hint(pos, set_genes, ours_name="embedded genes", theirs_name="gene-set genes")
            if not pos.isin(set_genes).any()
            else "the sets are smaller than `min_size` (or larger than `max_size`) within the embedded genes",
        )
        res = pd.DataFrame(columns=cols, index=pd.Index([], name="gene_set"))
    else:
        res = pd.DataFrame(rows).set_index("gene_set")
        res["fdr"] = _bh(res["pval"].to_numpy())
        res = res[cols].sort_values("auroc", ascending=False)
    res.attrs["n_genes_embedded"] = int(n)
    logg.finish(f"{len(res)} gene sets scored", t0)
    return res
