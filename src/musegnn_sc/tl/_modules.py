"""Gene modules: Leiden clusters of the gene embeddings, and what each module is made of."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from musegnn_sc import _logging
from musegnn_sc._keys import EMBEDDING

#: ``obs`` columns whose make-up is tabulated per module (those present in ``gdata.obs``).
COMPOSITION_KEYS = ("dataset", "omics", "tissue", "species")


def _check_gdata(gdata: AnnData, use_rep: str) -> None:
    if use_rep not in gdata.obsm:
        avail = ", ".join(repr(k) for k in gdata.obsm) or "none"
        msg = (
            f"`gdata.obsm[{use_rep!r}]` not found (available: {avail}). Pass the gene-level AnnData returned by "
            "`msg.tl.train_musegnn` (or `model.get_gene_embeddings()`), or name the embedding with `use_rep=`."
        )
        raise KeyError(msg)
    if gdata.n_obs < 3:
        msg = f"`gdata` has {gdata.n_obs} gene(s); at least 3 are needed to build a neighbour graph."
        raise ValueError(msg)


def module_summary(obs: pd.DataFrame, groupby: str, *, min_fraction: float = 0.05) -> tuple[dict, pd.DataFrame]:
    """Per-module composition tables and a summary of which modules span several omics, datasets or species.

    Parameters
    ----------
    obs
        ``gdata.obs`` with a ``groupby`` column.
    groupby
        Module column.
    min_fraction
        A category counts as present in a module when it holds at least this fraction of the module's genes
        (a stray gene does not make a module "shared").

    Returns
    -------
    ``composition``: ``{key: DataFrame}`` modules x categories counts for each of :data:`COMPOSITION_KEYS` in
    ``obs``; ``summary``: one row per module with ``n_genes``, ``n_unique_genes``, ``n_<key>`` (categories present)
    and ``shared_omics`` (at least two omics present).
    """
    modules = obs[groupby]
    composition = {}
    summary = pd.DataFrame(index=pd.Index(modules.cat.categories if hasattr(modules, "cat") else np.unique(modules)))
    summary.index.name = groupby
    summary["n_genes"] = modules.value_counts().reindex(summary.index).fillna(0).astype(int)
    if "gene" in obs:
        summary["n_unique_genes"] = obs.groupby(modules, observed=True)["gene"].nunique().reindex(summary.index)
    for key in COMPOSITION_KEYS:
        if key not in obs:
            continue
        tab = pd.crosstab(modules, obs[key].astype(str)).reindex(summary.index, fill_value=0)
        tab.index.name = groupby
        tab.columns.name = key
        composition[key] = tab
        frac = tab.div(tab.sum(axis=1).replace(0, 1), axis=0)
        summary[f"n_{key}"] = (frac >= min_fraction).sum(axis=1).astype(int)
        summary[f"top_{key}"] = tab.idxmax(axis=1).astype(str)
        summary[f"top_{key}_fraction"] = frac.max(axis=1).astype(float)
    if "n_omics" in summary:
        summary["shared_omics"] = summary["n_omics"] >= 2
    return composition, summary


def gene_modules(
    gdata: AnnData,
    *,
    resolution: float = 1.0,
    n_neighbors: int = 15,
    use_rep: str = EMBEDDING,
    key_added: str = "leiden",
    min_fraction: float = 0.05,
    umap: bool = True,
    random_state: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Find gene modules: Leiden clusters of the gene embeddings, with UMAP and per-module composition.

    Runs :func:`scanpy.pp.neighbors` on ``obsm[use_rep]``, :func:`scanpy.tl.leiden` (igraph implementation) and
    :func:`scanpy.tl.umap`, as the paper's Figure 3, then tabulates how every module is composed of datasets, omics,
    tissues and species, and which modules are shared across omics (Figure 3d).

    Parameters
    ----------
    gdata
        Gene-level AnnData: one row per (dataset, gene), as returned by :func:`musegnn_sc.tl.train_musegnn`.
    resolution
        Leiden resolution; higher gives more, smaller modules.
    n_neighbors
        Neighbours of each gene in the kNN graph.
    use_rep
        ``obsm`` key of the embedding.
    key_added
        ``obs`` column of the modules, and ``uns`` key of the summary.
    min_fraction
        A dataset, omics, tissue or species counts as present in a module when it holds at least this fraction of
        the module's genes.
    umap
        Also compute the UMAP of the genes (``obsm['X_umap']``), which :func:`musegnn_sc.pl.embedding` draws.
    random_state
        Seed of the neighbour search, Leiden and UMAP.
    copy
        Return a copy instead of writing to ``gdata``.

    Returns
    -------
    ``None``, or a copy of ``gdata`` if ``copy=True``. Writes

    - ``obs[key_added]``: module of each gene (categorical);
    - ``obsp['distances']``, ``obsp['connectivities']``, ``uns['neighbors']`` and, with ``umap=True``,
      ``obsm['X_umap']``, ``uns['umap']``;
    - ``uns[key_added]``: ``params``, ``composition`` (``{'dataset' | 'omics' | 'tissue' | 'species': DataFrame}``,
      modules x categories gene counts) and ``summary`` (DataFrame, one row per module: ``n_genes``,
      ``n_unique_genes``, ``n_<key>``, ``top_<key>``, ``top_<key>_fraction`` and ``shared_omics``).

    Examples
    --------
    >>> import musegnn_sc as msg
    >>> msg.tl.gene_modules(gdata, resolution=1.0)
    >>> gdata.uns["leiden"]["summary"].query("shared_omics")
    """
    import scanpy as sc

    _check_gdata(gdata, use_rep)
    t0 = _logging.start(f"finding gene modules on {gdata.n_obs} genes")
    gdata = gdata.copy() if copy else gdata
    sc.pp.neighbors(gdata, n_neighbors=min(n_neighbors, gdata.n_obs - 1), use_rep=use_rep, random_state=random_state)
    # igraph's implementation (scanpy's future default) is faster than leidenalg and needs n_iterations=2
    sc.tl.leiden(
        gdata,
        resolution=resolution,
        key_added=key_added,
        flavor="igraph",
        n_iterations=2,
        directed=False,
        random_state=random_state,
    )
    if umap:
        sc.tl.umap(gdata, random_state=random_state)
    composition, summary = module_summary(gdata.obs, key_added, min_fraction=min_fraction)
    uns = gdata.uns.setdefault(key_added, {})
    uns.setdefault("params", {})
    uns["params"].update({"use_rep": use_rep, "n_neighbors": n_neighbors, "min_fraction": min_fraction})
    uns["composition"] = composition
    uns["summary"] = summary
    n_shared = int(summary["shared_omics"].sum()) if "shared_omics" in summary else 0
    _logging.finish(
        f"{summary.shape[0]} modules in obs[{key_added!r}] ({n_shared} shared across omics), "
        f"summary in uns[{key_added!r}]",
        t0,
    )
    return gdata if copy else None
