"""Hub genes of modules: kME (correlation with the module eigengene) and embedding centrality."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from musegnn_sc._keys import EMBEDDING
from musegnn_sc.tl._genes import _embedding, _gene_column, _unit_rows
from musegnn_sc.tl._score_modules import (
    column_correlation,
    column_moments,
    eigengene,
    expression,
    log_normalise,
    match_modules,
    module_membership,
)


def module_gene_vectors(gdata: AnnData, membership: pd.DataFrame, modules_key: str, use_rep: str) -> dict:
    """Per module: its genes, their unit mean embedding over the module's rows, and the datasets they come from."""
    X = _unit_rows(_embedding(gdata, use_rep))
    genes = _gene_column(gdata)
    modules = gdata.obs[modules_key].astype(object).to_numpy()
    ds = gdata.obs["dataset"].astype(str).to_numpy() if "dataset" in gdata.obs else np.full(len(genes), "")
    out = {}
    for module, members in membership.groupby("module", observed=True, sort=True)["gene"]:
        rows = np.flatnonzero((modules == module) & np.isin(genes, members.to_numpy()))
        codes, uniq = pd.factorize(genes[rows])
        sums = np.zeros((len(uniq), X.shape[1]))
        np.add.at(sums, codes, X[rows])
        datasets = pd.Series(ds[rows]).groupby(codes).agg(lambda s: ";".join(dict.fromkeys(s)))
        out[str(module)] = (
            np.asarray(uniq, dtype=str),
            _unit_rows(sums),
            np.bincount(codes, minlength=len(uniq)),
            datasets.reindex(range(len(uniq))).to_numpy(),
        )
    return out


def module_expression(adata: AnnData, membership, *, layer, gene_symbols, min_genes: int = 2):
    """Per module: the log-normalised columns of its genes in ``adata`` (non-constant) and their gene names."""
    if hasattr(adata, "mod"):
        msg = (
            "`adata` is a MuData: pass the AnnData of one modality, e.g. `mdata.mod['rna_kang_ctrl']`, to rank hub "
            "genes by their correlation with the eigengene in that dataset."
        )
        raise TypeError(msg)
    X, names, counts = expression(adata, layer=layer, gene_symbols=gene_symbols, where="`adata`")
    cols = match_modules(membership, names, min_genes=min_genes, where="`adata`", gene_symbols=gene_symbols)
    out = {}
    for module, c in cols.items():
        Xm = log_normalise(X, counts, c)
        keep = column_moments(Xm)[1] > 0
        if keep.sum() >= min_genes:
            out[module] = (Xm[:, np.flatnonzero(keep)], names[c[keep]].astype(str))
    return out


def hub_genes(
    gdata: AnnData,
    adata: AnnData | None = None,
    *,
    modules_key: str = "leiden",
    n: int | None = 10,
    modules: Sequence[str] | None = None,
    sort_by: str | None = None,
    use_rep: str = EMBEDDING,
    layer: str | None = None,
    gene_symbols: str | None = None,
) -> pd.DataFrame:
    """Hub genes of each module, by kME (hdWGCNA's ``GetHubGenes``) and by centrality in the gene embedding.

    A module's genes are those assigned to it in most datasets (as in :func:`~musegnn_sc.tl.score_modules`).

    - ``centrality`` (always): mean cosine similarity of the gene's embedding to those of the module's other genes
      (a gene's embedding: the normalised mean of its rows of that module over the datasets).
    - ``kME`` (with ``adata``): Pearson correlation of the gene's log-normalised expression with the module
      eigengene in ``adata`` (raw counts are normalised as :func:`~musegnn_sc.tl.score_modules` does); NaN for
      genes absent or constant in ``adata``.

    Parameters
    ----------
    gdata
        Gene-level AnnData with the modules in ``obs[modules_key]`` and the embedding in ``obsm[use_rep]``.
    adata
        Cells x genes AnnData (one modality: pass ``mdata.mod[name]``) for kME; ``None`` ranks by centrality only.
    modules_key
        ``gdata.obs`` column of the modules.
    n
        Hub genes per module (``None``: every gene, ranked).
    modules
        Modules to report (default: all).
    sort_by
        ``"kME"`` (default with ``adata``) or ``"centrality"`` (default without).
    use_rep
        ``gdata.obsm`` key of the embedding.
    layer
        Layer of ``adata`` instead of ``X``.
    gene_symbols
        ``adata.var`` column with gene symbols when ``var_names`` are other identifiers.

    Returns
    -------
    Tidy DataFrame, one row per (module, gene), best first within each module: ``module``, ``rank`` (1 = hub, by
    ``sort_by``), ``gene``, ``kME`` and ``kME_rank`` (with ``adata``), ``centrality``, ``centrality_rank``,
    ``n_datasets`` (datasets where the gene is in the module) and ``datasets``.

    Examples
    --------
    >>> import musegnn_sc as msg
    >>> hubs = msg.tl.hub_genes(gdata, adata, n=10)
    >>> hubs.query("module == '3'").head()
    """
    if n is not None and (int(n) != n or n < 1):
        msg = f"`n` must be a positive integer or None, got {n!r}."
        raise ValueError(msg)
    sort_by = sort_by or ("kME" if adata is not None else "centrality")
    if sort_by not in ("kME", "centrality"):
        msg = f"`sort_by` must be 'kME' or 'centrality', got {sort_by!r}."
        raise ValueError(msg)
    if sort_by == "kME" and adata is None:
        msg = "`sort_by='kME'` needs the cells: pass `adata`."
        raise ValueError(msg)
    membership = module_membership(gdata, modules_key)
    if modules is not None:
        unknown = sorted(set(map(str, modules)) - set(membership["module"].astype(str)))
        if unknown:
            msg = f"Module(s) {', '.join(map(repr, unknown))} not in `gdata.obs[{modules_key!r}]`."
            raise KeyError(msg)
        membership = membership[membership["module"].astype(str).isin(list(map(str, modules)))]
    vectors = module_gene_vectors(gdata, membership, modules_key, use_rep)
    kme: dict[str, pd.Series] = {}
    if adata is not None:
        for module, (Xm, names) in module_expression(adata, membership, layer=layer, gene_symbols=gene_symbols).items():
            me, _, _ = eigengene(Xm)
            kme[module] = pd.Series(column_correlation(Xm, me), index=names).groupby(level=0).first()
    frames = []
    for module, (genes, V, n_ds, datasets) in vectors.items():
        k = len(genes)
        cos = V @ V.T
        centrality = (cos.sum(axis=1) - np.diag(cos)) / max(k - 1, 1) if k > 1 else np.full(k, np.nan)
        df = pd.DataFrame({"module": module, "gene": genes})
        if adata is not None:
            df["kME"] = kme[module].reindex(genes).to_numpy() if module in kme else np.nan
            df["kME_rank"] = df["kME"].rank(ascending=False, method="min").astype("Int64")
        df["centrality"] = centrality
        df["centrality_rank"] = df["centrality"].rank(ascending=False, method="min").astype("Int64")
        df["n_datasets"] = n_ds.astype(np.int64)
        df["datasets"] = datasets
        df = df.sort_values([sort_by, "gene"], ascending=[False, True], na_position="last", kind="stable")
        df.insert(1, "rank", np.arange(1, k + 1))
        frames.append(df if n is None else df.head(n))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if len(out):
        order = [str(c) for c in membership["module"].cat.categories]
        out["module"] = pd.Categorical(out["module"], categories=[m for m in order if m in set(out["module"])])
    return out
