"""Module activity on cells: module eigengenes (WGCNA) or any decoupler method, with the modules as the network."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData
from scipy import sparse

from musegnn_sc import _logging
from musegnn_sc.tl._genes import _gene_column

#: Default ``obsm`` / ``uns`` key of the scores.
SCORES_KEY = "module_scores"
#: Modules with more matched genes than this use an implicit (matrix-free) eigen solver instead of the k x k matrix.
_DENSE_MAX_GENES = 2000
#: decoupler 2.x methods that score gene sets on cells with one call ``method(data, net, tmin=...)``.
DECOUPLER_METHODS = ("aucell", "gsea", "gsva", "mdt", "mlm", "ora", "udt", "ulm", "viper", "waggr", "zscore")
_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}")


# ---------------------------------------------------------------------------------------------------------------------
# Module membership and expression matrices (shared with hub_genes and the network plot)
# ---------------------------------------------------------------------------------------------------------------------


def module_membership(gdata: AnnData, modules_key: str) -> pd.DataFrame:
    """One module per gene: the module it is assigned to in most datasets (ties: the first module).

    Returns a DataFrame with columns ``module`` (categorical, in the order of ``gdata.obs[modules_key]``), ``gene``
    and ``n_datasets`` (rows of the gene in that module), sorted by module.
    """
    if modules_key not in gdata.obs:
        avail = ", ".join(repr(c) for c in gdata.obs.columns) or "none"
        msg = (
            f"`gdata.obs[{modules_key!r}]` not found (obs columns: {avail}). Run `msg.tl.gene_modules(gdata)` first, "
            "or name the module column with `modules_key=`."
        )
        raise KeyError(msg)
    modules = gdata.obs[modules_key]
    order = [str(c) for c in modules.cat.categories] if hasattr(modules, "cat") else sorted(map(str, modules.unique()))
    df = pd.DataFrame({"gene": _gene_column(gdata), "module": modules.astype(object).to_numpy()})
    df = df[df["module"].notna()]
    df["module"] = df["module"].astype(str)
    counts = df.groupby(["gene", "module"], sort=False).size().rename("n_datasets").reset_index()
    counts["_order"] = counts["module"].map({m: i for i, m in enumerate(order)})
    counts = counts.sort_values(["gene", "n_datasets", "_order"], ascending=[True, False, True], kind="stable")
    best = counts.drop_duplicates("gene", keep="first")
    best = best.sort_values(["_order", "n_datasets", "gene"], ascending=[True, False, True], kind="stable")
    best["module"] = pd.Categorical(best["module"], categories=order)
    return best[["module", "gene", "n_datasets"]].reset_index(drop=True)


def looks_like_counts(X) -> bool:
    """Non-negative integer values (on a sample of the stored entries): raw counts rather than log data."""
    values = X.data if sparse.issparse(X) else np.asarray(X).ravel()
    if values.size == 0:
        return False
    values = values[:: max(1, values.size // 20_000)]
    return bool(np.all(values >= 0) and np.allclose(values, np.round(values)) and values.max() > 1)


def expression(adata: AnnData, *, layer: str | None, gene_symbols: str | None, where: str):
    """The matrix to score (``X`` or a layer), the gene name of each column, and whether it holds counts."""
    if layer is not None and layer not in adata.layers:
        avail = ", ".join(repr(k) for k in adata.layers) or "none"
        msg = f"Layer {layer!r} not found in {where} (layers: {avail}). Pass `layer=None` to use `X`."
        raise KeyError(msg)
    X = adata.layers[layer] if layer is not None else adata.X
    if X is None:
        msg = f"{where} has no expression matrix in `X`; pass the layer holding it with `layer=`."
        raise ValueError(msg)
    if gene_symbols is not None:
        if gene_symbols not in adata.var:
            avail = ", ".join(repr(c) for c in adata.var.columns) or "none"
            msg = (
                f"`gene_symbols={gene_symbols!r}` is not a column of `{where}.var` (columns: {avail}). Name the "
                "`var` column holding gene symbols, or pass `gene_symbols=None` to match `var_names`."
            )
            raise KeyError(msg)
        names = adata.var[gene_symbols].astype(object).to_numpy()
        names = np.array(["" if pd.isna(v) else str(v) for v in names], dtype=object)
    else:
        names = adata.var_names.astype(str).to_numpy().astype(object)
    if sparse.issparse(X):
        X = sparse.csr_matrix(X)
    else:
        X = np.asarray(X)
    return X, names, looks_like_counts(X)


def log_normalise(X, counts: bool, cols: np.ndarray | None = None):
    """Columns ``cols`` of ``X`` (all if ``None``), float64; for counts, scaled to the median total and log1p'ed.

    Cell totals are those of the whole matrix (as :func:`scanpy.pp.normalize_total`), the copy holds only the chosen
    columns, and sparse stays sparse.
    """
    sub = X if cols is None else X[:, cols]
    sub = sub.astype(np.float64, copy=True)
    if not counts:
        return sub
    totals = np.asarray(X.sum(axis=1)).ravel().astype(np.float64)
    target = float(np.median(totals[totals > 0])) if np.any(totals > 0) else 1.0
    scale = np.divide(target, totals, out=np.zeros_like(totals), where=totals > 0)
    if sparse.issparse(sub):
        sub = sparse.csr_matrix(sparse.diags(scale) @ sub)
        np.log1p(sub.data, out=sub.data)
        return sub
    return np.log1p(sub * scale[:, None])


def column_moments(Xm) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) standard deviation of each column, without densifying a sparse matrix."""
    n = Xm.shape[0]
    if sparse.issparse(Xm):
        mu = np.asarray(Xm.mean(axis=0)).ravel()
        ex2 = np.asarray(Xm.multiply(Xm).sum(axis=0)).ravel() / n
    else:
        mu = Xm.mean(axis=0)
        ex2 = (Xm**2).mean(axis=0)
    return mu, np.sqrt(np.maximum(ex2 - mu**2, 0.0))


def eigengene(Xm) -> tuple[np.ndarray, np.ndarray, float]:
    """First principal component of the standardised columns of ``Xm`` (cells x module genes, no constant column).

    With ``Z = (Xm - mean) / sd`` (implicit: never formed), the loading vector ``v`` is the top eigenvector of the
    gene correlation matrix ``Z'Z / n``, and the eigengene is ``Z v``, standardised to mean 0 and variance 1, with
    its sign chosen so that it correlates positively with the mean of the standardised genes (WGCNA's
    ``align = "along average"``). Returns ``(eigengene, v, fraction of variance explained)``.
    """
    n, k = Xm.shape
    mu, sd = column_moments(Xm)
    inv = 1.0 / sd
    if k <= _DENSE_MAX_GENES:
        gram = Xm.T @ Xm
        gram = gram.toarray() if sparse.issparse(gram) else np.asarray(gram)
        corr = (gram / n - np.outer(mu, mu)) * np.outer(inv, inv)
        w, vecs = np.linalg.eigh((corr + corr.T) / 2)
        lam, v = float(w[-1]), vecs[:, -1]
    else:
        from scipy.sparse.linalg import LinearOperator, eigsh

        def matvec(x):
            y = np.asarray(x).ravel() * inv
            z = np.asarray(Xm @ y).ravel() - mu @ y
            return (np.asarray(Xm.T @ z).ravel() - mu * z.sum()) * inv / n

        op = LinearOperator((k, k), matvec=matvec, dtype=np.float64)
        w, vecs = eigsh(op, k=1, which="LA", v0=np.full(k, 1.0 / np.sqrt(k)))
        lam, v = float(w[0]), vecs[:, 0]
    score = np.asarray(Xm @ (v * inv)).ravel() - mu @ (v * inv)
    average = np.asarray(Xm @ inv).ravel() / k - mu @ inv / k
    if np.dot(score - score.mean(), average - average.mean()) < 0:
        score, v = -score, -v
    sd_score = score.std()
    score = (score - score.mean()) / (sd_score if sd_score > 0 else 1.0)
    return score, v, lam / k


def column_correlation(Xm, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of every column of ``Xm`` with ``y`` (sparse-aware)."""
    n = Xm.shape[0]
    mu, sd = column_moments(Xm)
    yc = y - y.mean()
    cov = np.asarray(Xm.T @ yc).ravel() / n
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 0, cov / (sd * yc.std()), np.nan)


def _no_match_error(where: str, names: np.ndarray, module_genes: np.ndarray, gene_symbols: str | None) -> ValueError:
    sample_var = [str(v) for v in names[:3]]
    sample_mod = [str(g) for g in module_genes[:3]]
    upper_var = {str(v).upper() for v in names}
    n_case = sum(str(g).upper() in upper_var for g in module_genes)
    hints = []
    if np.mean([bool(_ENSEMBL.match(str(v))) for v in names[:200]]) > 0.5 and gene_symbols is None:
        hints.append("its `var_names` look like Ensembl IDs: pass `gene_symbols=` (the `var` column with symbols)")
    if n_case:
        hints.append(
            f"{n_case} module genes match when case is ignored: the data are probably of another species (human "
            "'GENE' vs mouse 'Gene'); map orthologues with `msg.pp.map_orthologs` or use modules of that species"
        )
    if not hints:
        hints.append("check that the modules and the data use the same identifiers and species")
    return ValueError(
        f"No gene of any module is in {where} (its genes: {', '.join(sample_var)}, ...; module genes: "
        f"{', '.join(sample_mod)}, ...): " + "; ".join(hints) + "."
    )


def match_modules(
    membership: pd.DataFrame,
    names: np.ndarray,
    *,
    min_genes: int,
    where: str,
    gene_symbols: str | None,
    modules: Sequence[str] | None = None,
    warn: bool = True,
) -> dict[str, np.ndarray]:
    """Columns of each module's genes in the data (first column of a duplicated name); small modules dropped."""
    first = pd.Series(np.arange(len(names)), index=pd.Index(names)).groupby(level=0).first()
    first = first[first.index != ""]
    if modules is not None:
        missing = sorted(set(map(str, modules)) - set(membership["module"].astype(str)))
        if missing:
            msg = f"Module(s) {', '.join(map(repr, missing))} not found in the modules of `gdata`."
            raise KeyError(msg)
        membership = membership[membership["module"].astype(str).isin(list(map(str, modules)))]
    out, small = {}, []
    for module, genes in membership.groupby("module", observed=True, sort=True)["gene"]:
        cols = first.reindex(genes.to_numpy()).dropna().to_numpy().astype(np.int64)
        if len(cols) >= min_genes:
            out[str(module)] = cols
        else:
            small.append(f"{module} ({len(cols)} of {len(genes)} genes)")
    if not out:
        if all(s.split(" (")[1].startswith("0 ") for s in small):
            raise _no_match_error(where, names, membership["gene"].to_numpy(), gene_symbols)
        msg = (
            f"No module has at least `min_genes={min_genes}` genes in {where}: {', '.join(small)}. "
            "Lower `min_genes` or check the gene identifiers."
        )
        raise ValueError(msg)
    if small and warn:
        warnings.warn(
            f"{len(small)} module(s) have fewer than `min_genes={min_genes}` genes in {where} and are not scored: "
            f"{', '.join(small)}.",
            UserWarning,
            stacklevel=4,
        )
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Scoring one AnnData
# ---------------------------------------------------------------------------------------------------------------------


def _score_one(
    adata: AnnData,
    membership: pd.DataFrame,
    *,
    method: str,
    layer: str | None,
    gene_symbols: str | None,
    min_genes: int,
    where: str,
    kwargs: dict,
):
    X, names, counts = expression(adata, layer=layer, gene_symbols=gene_symbols, where=where)
    cols = match_modules(membership, names, min_genes=min_genes, where=where, gene_symbols=gene_symbols)
    info = []
    scores: dict[str, np.ndarray] = {}
    padj = None
    gene_rows = []
    if method == "eigengene":
        used = np.unique(np.concatenate(list(cols.values())))
        Xu = log_normalise(X, counts, used)
        pos = {c: i for i, c in enumerate(used)}
        dropped_const = []
        for module, c in cols.items():
            Xm = Xu[:, [pos[j] for j in c]]
            _, sd = column_moments(Xm)
            keep = sd > 0
            if keep.sum() < max(min_genes, 2):
                dropped_const.append(f"{module} ({int(keep.sum())} non-constant genes)")
                continue
            score, _, varexp = eigengene(Xm[:, np.flatnonzero(keep)])
            scores[module] = score
            info.append((module, len(c), int(keep.sum()), varexp))
            gene_rows += [(module, names[j], adata.var_names[j]) for j in c[keep]]
        if dropped_const:
            warnings.warn(
                f"Module(s) with fewer than `min_genes={min_genes}` genes that vary across the cells of {where} are "
                f"not scored: {', '.join(dropped_const)}.",
                UserWarning,
                stacklevel=3,
            )
        if not scores:
            msg = f"No module could be scored in {where}: every module has constant genes only."
            raise ValueError(msg)
    else:
        import decoupler as dc

        Xn = log_normalise(X, counts)
        # decoupler matches var_names: give it the gene names (placeholders for missing or repeated ones)
        var_names = np.array(names, dtype=object)
        dup = pd.Index(var_names).duplicated() | (var_names == "")
        var_names[dup] = [f"\x00unmatched{i}" for i in np.flatnonzero(dup)]
        tmp = AnnData(X=Xn, obs=pd.DataFrame(index=adata.obs_names.copy()), var=pd.DataFrame(index=var_names))
        net = pd.DataFrame(
            [(m, names[j]) for m, c in cols.items() for j in c], columns=["source", "target"]
        ).drop_duplicates()
        getattr(dc.mt, method)(tmp, net, tmin=min_genes, empty=False, verbose=False, **kwargs)
        es = tmp.obsm[f"score_{method}"]
        scores = {m: es[m].to_numpy(dtype=np.float64) for m in cols if m in es.columns}
        dropped = [str(m) for m in cols if m not in scores]
        if dropped:
            warnings.warn(
                f"decoupler's {method!r} returned no score for module(s) {', '.join(dropped)} (it filters targets "
                f"itself, e.g. genes without variance): they are left out of the scores.",
                UserWarning,
                stacklevel=3,
            )
        if f"padj_{method}" in tmp.obsm:
            padj = tmp.obsm[f"padj_{method}"][list(scores)]
        for m, c in cols.items():
            if m in scores:
                info.append((m, len(c), len(c), np.nan))
                gene_rows += [(m, names[j], adata.var_names[j]) for j in c]
    n_in_gdata = membership.groupby("module", observed=True).size()
    summary = pd.DataFrame(info, columns=["module", "n_matched", "n_used", "variance_explained"]).set_index("module")
    summary.insert(0, "n_genes", n_in_gdata.reindex(summary.index).to_numpy().astype(np.int64))
    summary.index = summary.index.astype(str)
    genes = pd.DataFrame(gene_rows, columns=["module", "gene", "var_name"]).astype(str)
    genes.index = genes.index.astype(str)
    table = pd.DataFrame(scores, index=adata.obs_names.copy())
    return table, padj, summary, genes, counts


def score_modules(
    adata: AnnData | MuData,
    gdata: AnnData,
    *,
    modules_key: str = "leiden",
    method: str = "eigengene",
    layer: str | None = None,
    gene_symbols: str | None = None,
    min_genes: int = 5,
    modules: Sequence[str] | None = None,
    key_added: str = SCORES_KEY,
    mods: str | Sequence[str] | None = None,
    copy: bool = False,
    **kwargs: Any,
) -> AnnData | MuData | None:
    """Score gene modules on cells: module eigengenes (WGCNA, hdWGCNA) or any decoupler method.

    Each module of ``gdata.obs[modules_key]`` (from :func:`musegnn_sc.tl.gene_modules`) is the set of genes
    assigned to it in most datasets; its genes present in ``adata`` are scored on every cell (spot).

    - ``method="eigengene"``: the WGCNA module eigengene, the first principal component of the module genes'
      standardised log-normalised expression (each gene scaled to mean 0 and variance 1 over the cells), with the
      sign that makes it correlate positively with the module's mean standardised expression; returned with mean 0
      and variance 1. It is computed from the module's columns only, sparse-aware: the standardised matrix is never
      formed (the genes' correlation matrix, or for modules of more than 2,000 genes a matrix-free eigen solver).
      Genes constant over the cells are left out of their module.
    - any decoupler 2.x method (``"ulm"``, ``"aucell"``, ``"zscore"``, ``"mlm"``, ``"waggr"``, ``"viper"``, ...):
      ``decoupler.mt.<method>`` with the module membership as the network (``source`` = module, ``target`` =
      gene, unweighted) and ``tmin=min_genes``; extra keyword arguments go to that method.

    Raw counts (non-negative integers in the matrix used) are normalised to the median total per cell and
    ``log1p``-transformed internally, for both kinds of method, so log-normalised and count data give the same
    scores; ``uns[key_added]['params']['normalized_counts']`` records it. Pass log-normalised data (``layer=``) to
    control the normalisation yourself. ATAC gene activity (:func:`musegnn_sc.pp.gene_activity`) and spatial spots
    are scored like RNA.

    Parameters
    ----------
    adata
        Cells x genes AnnData, or a MuData (every modality, or those in ``mods``, is scored separately).
    gdata
        Gene-level AnnData with the modules (one row per dataset and gene, ``obs['gene']``), or one row per gene.
    modules_key
        ``gdata.obs`` column of the modules.
    method
        ``"eigengene"`` or the name of a decoupler method.
    layer
        Layer of ``adata`` to score instead of ``X``.
    gene_symbols
        ``adata.var`` column holding gene symbols, to match the modules' genes when ``var_names`` are other
        identifiers (Ensembl IDs); scanpy's name for it.
    min_genes
        Modules with fewer matched (and, for the eigengene, non-constant) genes are not scored, with a warning
        naming them.
    modules
        Score only these modules (default: all).
    key_added
        ``obsm`` key of the scores and ``uns`` key of their description.
    mods
        With a MuData: the modalities to score (default: all). Every one must share genes with the modules.
    copy
        Return a copy instead of writing to ``adata``.
    **kwargs
        Passed to the decoupler method (not allowed with ``"eigengene"``).

    Returns
    -------
    ``None``, or a copy of ``adata`` (MuData or AnnData) if ``copy=True``. Writes, in each scored AnnData:

    - ``obsm[key_added]``: DataFrame cells x modules of scores (decoupler's layout);
    - ``obsm[key_added + '_padj']``: decoupler's adjusted p-values, for the methods that give them;
    - ``uns[key_added]``: ``params``, ``modules`` (DataFrame per module: ``n_genes`` in ``gdata``, ``n_matched`` in
      the data, ``n_used``, ``variance_explained`` by the eigengene) and ``genes`` (DataFrame ``module``, ``gene``,
      ``var_name``: the genes used).

    Examples
    --------
    >>> import musegnn_sc as msg
    >>> import scanpy as sc
    >>> import decoupler as dc
    >>> msg.tl.gene_modules(gdata)
    >>> msg.tl.score_modules(adata, gdata)  # eigengenes in adata.obsm["module_scores"]
    >>> msg.tl.score_modules(adata, gdata, method="ulm", key_added="module_ulm")
    >>> sc.pl.umap(dc.pp.get_obsm(adata, "module_scores"), color=["0", "1"])  # scores on the cell UMAP
    >>> msg.tl.score_modules(mdata, gdata, mods=["rna", "atac"], gene_symbols="symbol")
    """
    if method != "eigengene" and method not in DECOUPLER_METHODS:
        msg = f"Unknown `method={method!r}`: use 'eigengene' or a decoupler method ({', '.join(DECOUPLER_METHODS)})."
        raise ValueError(msg)
    if method == "eigengene" and kwargs:
        msg = f"Option(s) {', '.join(kwargs)} apply to decoupler methods only, not to `method='eigengene'`."
        raise TypeError(msg)
    if int(min_genes) != min_genes or min_genes < 1:
        msg = f"`min_genes` must be a positive integer, got {min_genes!r}."
        raise ValueError(msg)
    if isinstance(adata, MuData):
        names = list(adata.mod) if mods is None else ([mods] if isinstance(mods, str) else list(mods))
        missing = [m for m in names if m not in adata.mod]
        if missing:
            msg = (
                f"Modality(ies) {', '.join(map(repr, missing))} not in the MuData (modalities: {', '.join(adata.mod)})."
            )
            raise KeyError(msg)
        targets = [(name, f"modality {name!r}") for name in names]
    elif isinstance(adata, AnnData):
        if mods is not None:
            msg = "`mods=` selects modalities of a MuData; `adata` is an AnnData. Drop `mods=`."
            raise ValueError(msg)
        targets = [(None, "`adata`")]
    else:
        msg = f"`adata` must be an AnnData or a MuData, got {type(adata).__name__}."
        raise TypeError(msg)
    membership = module_membership(gdata, modules_key)
    if modules is not None:
        wanted = [str(m) for m in modules]
        unknown = sorted(set(wanted) - set(membership["module"].astype(str)))
        if unknown:
            msg = f"Module(s) {', '.join(map(repr, unknown))} not in `gdata.obs[{modules_key!r}]`."
            raise KeyError(msg)
        membership = membership[membership["module"].astype(str).isin(wanted)]
    t0 = _logging.start(f"scoring {membership['module'].nunique()} modules with {method!r}")
    results = []
    for name, where in targets:
        ad = adata if name is None else adata.mod[name]
        results.append(
            (
                name,
                _score_one(
                    ad,
                    membership,
                    method=method,
                    layer=layer,
                    gene_symbols=gene_symbols,
                    min_genes=min_genes,
                    where=where,
                    kwargs=kwargs,
                ),
            )
        )
    out = adata.copy() if copy else adata
    for name, (table, padj, summary, genes, counts) in results:
        ad = out if name is None else out.mod[name]
        ad.obsm[key_added] = table
        if padj is not None:
            ad.obsm[f"{key_added}_padj"] = padj
        else:
            ad.obsm.pop(f"{key_added}_padj", None)
        ad.uns[key_added] = {
            "params": {
                "modules_key": modules_key,
                "method": method,
                "layer": layer,
                "gene_symbols": gene_symbols,
                "min_genes": int(min_genes),
                "normalized_counts": bool(counts),
            },
            "modules": summary,
            "genes": genes,
        }
        for k in ("layer", "gene_symbols"):
            if ad.uns[key_added]["params"][k] is None:
                del ad.uns[key_added]["params"][k]
    _logging.finish(f"scores in obsm[{key_added!r}], description in uns[{key_added!r}]", t0)
    return out if copy else None
