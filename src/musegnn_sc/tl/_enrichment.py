"""Over-representation analysis of gene sets in gene modules (offline GOEA, as the paper's goatools runs)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse, stats

from musegnn_sc import _logging
from musegnn_sc._genesets import read_gmt

GeneSets = Mapping[str, Iterable[str]] | pd.DataFrame | str | Path

#: Columns of the table :func:`enrichment` returns.
RESULT_COLUMNS = (
    "module",
    "term",
    "n_overlap",
    "n_module",
    "n_term",
    "n_background",
    "gene_ratio",
    "background_ratio",
    "fold_enrichment",
    "pval",
    "fdr",
    "genes",
)


def as_gene_sets(gene_sets: GeneSets) -> dict[str, list[str]]:
    """Normalise gene sets given as a mapping, a GMT path or a long table to ``{term: [genes]}``.

    A table needs a term column (``term``, ``source``, ``geneset`` or ``gs_name``) and a gene column (``gene``,
    ``target``, ``genesymbol`` or ``gene_symbol``), as decoupler's and msigdbr's networks have.
    """
    if isinstance(gene_sets, str | Path):
        path = Path(gene_sets)
        sets = read_gmt(path)
        if not sets:
            msg = f"No gene set read from {str(path)!r}: expected GMT lines `name<TAB>description<TAB>gene1<TAB>...`."
            raise ValueError(msg)
        return sets
    if isinstance(gene_sets, pd.DataFrame):
        cols = {c.lower(): c for c in gene_sets.columns}
        term = next((cols[c] for c in ("term", "source", "geneset", "gs_name") if c in cols), None)
        gene = next((cols[c] for c in ("gene", "target", "genesymbol", "gene_symbol") if c in cols), None)
        if term is None or gene is None:
            msg = (
                f"Cannot tell the term and gene columns of the gene-set table (columns: {list(gene_sets.columns)}). "
                "Name them 'term' and 'gene' (or decoupler's 'source' and 'target')."
            )
            raise ValueError(msg)
        return {str(k): v.astype(str).tolist() for k, v in gene_sets.groupby(term, observed=True)[gene]}
    if isinstance(gene_sets, Mapping):
        out = {}
        for k, v in gene_sets.items():
            if isinstance(v, str):
                msg = f"Gene set {k!r} is a string; give each set as a list of gene symbols."
                raise TypeError(msg)
            out[str(k)] = [str(g) for g in v]
        return out
    msg = f"`gene_sets` must be a dict {{term: genes}}, a GMT path or a DataFrame, not {type(gene_sets).__name__}."
    raise TypeError(msg)


def benjamini_hochberg(pvals: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (step-up, monotone, capped at 1); NaN stays NaN."""
    p = np.asarray(pvals, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    n = q.size
    if n == 0:
        return out
    order = np.argsort(q)
    ranked = q[order] * n / np.arange(1, n + 1)
    adj = np.minimum.accumulate(ranked[::-1])[::-1]
    res = np.empty(n)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return out


def _membership(groups: Sequence[Sequence[str]], index: pd.Index) -> sparse.csr_matrix:
    """Binary groups x genes matrix (genes outside ``index`` ignored)."""
    rows, cols = [], []
    for i, genes in enumerate(groups):
        pos = index.get_indexer(pd.unique(np.asarray(genes, dtype=object)))
        pos = pos[pos >= 0]
        rows.append(np.full(pos.size, i))
        cols.append(pos)
    r = np.concatenate(rows) if rows else np.array([], dtype=int)
    c = np.concatenate(cols) if cols else np.array([], dtype=int)
    return sparse.csr_matrix((np.ones(r.size, dtype=np.int32), (r, c)), shape=(len(groups), index.size))


def hypergeometric_enrichment(
    modules: Mapping[str, Sequence[str]],
    gene_sets: Mapping[str, Sequence[str]],
    background: Sequence[str],
    *,
    min_size: int = 5,
    max_size: int = 500,
    fdr_by: Literal["module", "all"] = "module",
) -> pd.DataFrame:
    """Over-representation of ``gene_sets`` in each of ``modules`` against ``background`` (plain arrays in, table out).

    Sets and modules are first restricted to the background; sets with fewer than ``min_size`` or more than
    ``max_size`` background genes are not tested. The p-value of ``k`` overlapping genes is ``P(X >= k)`` for
    ``X ~ Hypergeom(M=|background|, n=|set|, N=|module|)``. Every tested (module, set) pair enters the correction,
    including those without overlap, which are then left out of the table.
    """
    bg = pd.Index(pd.unique(np.asarray(list(background), dtype=object)))
    terms = list(gene_sets)
    set_mat = _membership([gene_sets[t] for t in terms], bg)
    set_size = np.asarray(set_mat.sum(axis=1)).ravel()
    keep = (set_size >= min_size) & (set_size <= max_size)
    terms = [t for t, k in zip(terms, keep, strict=True) if k]
    set_mat, set_size = set_mat[keep], set_size[keep]
    names = list(modules)
    mod_mat = _membership([modules[m] for m in names], bg)
    mod_size = np.asarray(mod_mat.sum(axis=1)).ravel()
    overlap = (mod_mat @ set_mat.T).toarray()  # modules x sets
    M = bg.size
    pval = stats.hypergeom.sf(overlap - 1, M, set_size[None, :], mod_size[:, None])
    pval = np.clip(pval, 0.0, 1.0)
    tested = mod_size[:, None] > 0
    pval = np.where(tested, pval, np.nan)
    if fdr_by == "module":
        fdr = np.vstack([benjamini_hochberg(row) for row in pval]) if pval.size else pval
    elif fdr_by == "all":
        fdr = benjamini_hochberg(pval.ravel()).reshape(pval.shape)
    else:
        msg = f"`fdr_by` must be 'module' or 'all', not {fdr_by!r}."
        raise ValueError(msg)

    mi, si = np.nonzero(overlap > 0)
    mod_csr = mod_mat.tocsr()
    set_csr = set_mat.tocsr()
    genes = []
    for m, s in zip(mi, si, strict=True):
        shared = np.intersect1d(mod_csr.indices[mod_csr.indptr[m] : mod_csr.indptr[m + 1]], set_csr[s].indices)
        genes.append(";".join(sorted(bg[shared])))
    k = overlap[mi, si]
    res = pd.DataFrame(
        {
            "module": [names[i] for i in mi],
            "term": [terms[i] for i in si],
            "n_overlap": k.astype(int),
            "n_module": mod_size[mi].astype(int),
            "n_term": set_size[si].astype(int),
            "n_background": M,
            "gene_ratio": k / mod_size[mi],
            "background_ratio": set_size[si] / M,
            "fold_enrichment": (k / mod_size[mi]) / (set_size[si] / M),
            "pval": pval[mi, si],
            "fdr": fdr[mi, si],
            "genes": genes,
        },
        columns=list(RESULT_COLUMNS),
    )
    order = {m: i for i, m in enumerate(names)}
    res = res.sort_values(["module", "pval", "term"], key=lambda c: c.map(order) if c.name == "module" else c)
    return res.reset_index(drop=True)


def _warn_if_disjoint(sets: Mapping[str, Sequence[str]], universe: np.ndarray, *, custom: bool) -> None:
    """Warn, naming the likely cause, when no gene of any set is in the background (the result would be empty)."""
    from musegnn_sc._symbols import identifier_hint

    set_genes = pd.unique(np.concatenate([np.asarray(v, dtype=object) for v in sets.values()])) if sets else []
    if len(set_genes) == 0 or pd.Index(universe).isin(set_genes).any():
        return
    hint = identifier_hint(universe, set_genes, ours_name="embedded genes", theirs_name="gene-set genes")
    where = "the given `background`" if custom else "the background (the embedded genes)"
    examples = ", ".join(map(str, list(universe[:3]))) + " vs " + ", ".join(map(str, list(set_genes[:3])))
    warnings.warn(
        f"No gene of any of the {len(sets)} gene set(s) is in {where}, so nothing can be tested and the result is "
        f"empty. Likely cause: {hint} ({examples}).",
        UserWarning,
        stacklevel=3,
    )


def enrichment(
    gdata: AnnData,
    gene_sets: GeneSets,
    *,
    groupby: str = "leiden",
    groups: Sequence[str] | None = None,
    gene_key: str = "gene",
    background: Sequence[str] | None = None,
    min_size: int = 5,
    max_size: int = 500,
    fdr_by: Literal["module", "all"] = "module",
) -> pd.DataFrame:
    """Gene-set over-representation in each gene module (hypergeometric test, Benjamini-Hochberg FDR).

    The offline counterpart of the paper's GOEA (goatools, ``fdr_bh``): a module's genes are the distinct symbols
    of its rows (a gene embedded from several datasets counts once), tested against the distinct symbols of all
    embedded genes.

    Parameters
    ----------
    gdata
        Gene-level AnnData with modules in ``obs[groupby]`` (see :func:`musegnn_sc.tl.gene_modules`).
    gene_sets
        ``{term: [genes]}``, a GMT file path (e.g. GO Biological Process or MSigDB Hallmark) or a long DataFrame
        with ``term``/``gene`` (or decoupler's ``source``/``target``) columns. Symbols must match ``obs[gene_key]``
        (use :func:`musegnn_sc.pp.map_orthologs` before training to put mouse data in human symbols).
    groupby
        ``obs`` column of the modules (or any grouping of the genes).
    groups
        Test only these modules; all by default.
    gene_key
        ``obs`` column of gene symbols.
    background
        Gene universe; by default the distinct symbols in ``obs[gene_key]`` (the embedded genes), which is the right
        universe because only these genes could have fallen into a module. A custom background is intersected with
        module genes as given.
    min_size
        Test only sets with at least this many genes in the background.
    max_size
        Test only sets with at most this many genes in the background (very broad terms say little).
    fdr_by
        ``'module'``: BH correction within each module over the sets tested (goatools' per-study correction, the
        default); ``'all'``: one correction over every (module, set) pair.

    Returns
    -------
    Tidy DataFrame, one row per (module, set) with at least one gene in common, sorted by module then p-value:
    ``module``, ``term``, ``n_overlap`` (k), ``n_module`` (N), ``n_term`` (n, within the background),
    ``n_background`` (M), ``gene_ratio`` (k/N), ``background_ratio`` (n/M), ``fold_enrichment``, ``pval``
    (``P(X >= k)``, hypergeometric), ``fdr`` (Benjamini-Hochberg) and ``genes`` (the overlap, ``;``-separated).
    Parameters are in ``result.attrs['params']``. When no gene of any set is in the background the table is empty
    and a warning names the likely cause (Ensembl IDs against symbols, mouse against human capitalisation).

    Examples
    --------
    >>> res = msg.tl.enrichment(gdata, "h.all.v7.5.1.symbols.gmt", groupby="leiden")
    >>> res.query("fdr < 0.05").groupby("module").head(5)
    """
    for key in (groupby, gene_key):
        if key not in gdata.obs:
            hint = "Run `msg.tl.gene_modules(gdata)` first." if key == groupby else "Pass `gene_key=`."
            msg = f"`gdata.obs[{key!r}]` not found. {hint}"
            raise KeyError(msg)
    if min_size < 1 or max_size < min_size:
        msg = f"Need 1 <= min_size <= max_size, got min_size={min_size}, max_size={max_size}."
        raise ValueError(msg)
    sets = as_gene_sets(gene_sets)
    t0 = _logging.start(f"testing {len(sets)} gene sets in obs[{groupby!r}] modules")
    obs = gdata.obs[[groupby, gene_key]].dropna()
    genes = obs[gene_key].astype(str)
    labels = obs[groupby]
    names = list(labels.cat.categories) if hasattr(labels, "cat") else sorted(pd.unique(labels))
    if groups is not None:
        missing = [g for g in groups if g not in set(map(str, names))]
        if missing:
            msg = f"Module(s) {missing} not in `gdata.obs[{groupby!r}]` (available: {list(map(str, names))})."
            raise ValueError(msg)
        names = [n for n in names if str(n) in set(map(str, groups))]
    modules = {str(n): genes[(labels == n).to_numpy()].unique().tolist() for n in names}
    universe = genes.unique() if background is None else np.asarray(list(background), dtype=object)
    _warn_if_disjoint(sets, universe, custom=background is not None)
    res = hypergeometric_enrichment(modules, sets, universe, min_size=min_size, max_size=max_size, fdr_by=fdr_by)
    res["module"] = pd.Categorical(res["module"], categories=list(modules))
    res.attrs["params"] = {
        "groupby": groupby,
        "min_size": min_size,
        "max_size": max_size,
        "fdr_by": fdr_by,
        "n_sets": len(sets),
    }
    _logging.finish(f"{int((res['fdr'] < 0.05).sum())} (module, set) pairs with FDR < 0.05", t0)
    return res
