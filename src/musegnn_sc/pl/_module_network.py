"""Network of a module's hub genes (hdWGCNA's ModuleNetworkPlot / HubGeneNetworkPlot), laid out with networkx."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes

from musegnn_sc._docs import doc_ax_show_save, doc_params, doc_returns_axes
from musegnn_sc._keys import EMBEDDING

from ._utils import category_colors, finish, get_ax


def hub_edges(
    gdata: AnnData,
    hubs: pd.DataFrame,
    adata: AnnData | None,
    *,
    modules_key: str,
    edges: str,
    n_edges: int,
    use_rep: str,
    layer: str | None,
    gene_symbols: str | None,
) -> list[tuple[str, str, float]]:
    """Each hub's ``n_edges`` strongest positive edges to other hubs of its module (cosine or correlation)."""
    from musegnn_sc.tl._hub_genes import module_expression, module_gene_vectors
    from musegnn_sc.tl._score_modules import module_membership

    membership = module_membership(gdata, modules_key)
    membership = membership[membership["module"].astype(str).isin(set(hubs["module"].astype(str)))]
    out = []
    if edges == "embedding":
        vectors = module_gene_vectors(gdata, membership, modules_key, use_rep)
        per_module = {}
        for m, (genes, V, _, _) in vectors.items():
            per_module[m] = pd.DataFrame(V, index=genes)
    else:
        expr = module_expression(adata, membership, layer=layer, gene_symbols=gene_symbols)
        per_module = {}
        for m, (Xm, names) in expr.items():
            dense = Xm.toarray() if hasattr(Xm, "toarray") else np.asarray(Xm)
            z = (dense - dense.mean(axis=0)) / dense.std(axis=0)
            per_module[m] = pd.DataFrame(z.T / np.sqrt(z.shape[0]), index=names).groupby(level=0).first()
    for m, h in hubs.groupby(hubs["module"].astype(str), sort=False):
        if m not in per_module:
            continue
        vecs = per_module[m].reindex(h["gene"].astype(str)).dropna()
        genes = vecs.index.to_numpy()
        sim = vecs.to_numpy() @ vecs.to_numpy().T
        np.fill_diagonal(sim, -np.inf)
        for i, g in enumerate(genes):
            for j in np.argsort(-sim[i])[:n_edges]:
                if np.isfinite(sim[i, j]) and sim[i, j] > 0:
                    a, b = sorted((g, genes[j]))
                    out.append((f"{m}:{a}", f"{m}:{b}", float(sim[i, j])))
    return list({(a, b): (a, b, w) for a, b, w in out}.values())


@doc_params(ax_show_save=doc_ax_show_save, returns_axes=doc_returns_axes)
def module_network(
    gdata: AnnData,
    adata: AnnData | None = None,
    *,
    modules_key: str = "leiden",
    modules: Sequence[str] | None = None,
    n: int = 10,
    edges: str | None = None,
    n_edges: int = 3,
    use_rep: str = EMBEDDING,
    layer: str | None = None,
    gene_symbols: str | None = None,
    labels: bool = True,
    seed: int = 0,
    figsize: tuple[float, float] = (6.0, 6.0),
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Network of the hub genes of some modules, with their strongest edges.

    The ``n`` hub genes of each module (:func:`musegnn_sc.tl.hub_genes`: by kME with ``adata``, else by embedding
    centrality) are nodes, sized by their kME or centrality and coloured by module; each is joined to its
    ``n_edges`` most similar hubs of the same module, by cosine of the gene embeddings (``edges="embedding"``) or
    by correlation of expression in ``adata`` (``edges="coexpression"``), the edge width following the strength.
    Laid out with ``networkx.spring_layout``.

    Parameters
    ----------
    gdata
        Gene-level AnnData with the modules and the embedding.
    adata
        Cells x genes AnnData for kME and co-expression edges (one modality).
    modules_key
        ``gdata.obs`` column of the modules.
    modules
        Modules to draw (default: all).
    n
        Hub genes per module.
    edges
        ``"embedding"`` or ``"coexpression"``; default ``"coexpression"`` with ``adata``, else ``"embedding"``.
    n_edges
        Strongest edges kept per gene.
    use_rep
        ``gdata.obsm`` key of the embedding.
    layer
        Layer of ``adata`` instead of ``X``.
    gene_symbols
        ``adata.var`` column with gene symbols.
    labels
        Write the gene names.
    seed
        Seed of the layout.
    figsize
        Size of a new figure.
    {ax_show_save}

    {returns_axes}

    Examples
    --------
    >>> msg.pl.module_network(gdata, adata, modules=["3"], n=15)
    """
    import networkx as nx

    from musegnn_sc.tl._hub_genes import hub_genes

    edges = edges or ("coexpression" if adata is not None else "embedding")
    if edges not in ("embedding", "coexpression"):
        msg = f"`edges` must be 'embedding' or 'coexpression', got {edges!r}."
        raise ValueError(msg)
    if edges == "coexpression" and adata is None:
        msg = "`edges='coexpression'` needs the cells: pass `adata`."
        raise ValueError(msg)
    hubs = hub_genes(
        gdata,
        adata,
        modules_key=modules_key,
        n=n,
        modules=modules,
        use_rep=use_rep,
        layer=layer,
        gene_symbols=gene_symbols,
    )
    size_col = "kME" if adata is not None else "centrality"
    hubs = hubs.dropna(subset=[size_col])
    if hubs.empty:
        msg = "No hub gene to draw: no module gene has a kME in `adata` (check the gene identifiers)."
        raise ValueError(msg)
    edge_list = hub_edges(
        gdata,
        hubs,
        adata,
        modules_key=modules_key,
        edges=edges,
        n_edges=n_edges,
        use_rep=use_rep,
        layer=layer,
        gene_symbols=gene_symbols,
    )
    G = nx.Graph()
    for row in hubs.itertuples(index=False):
        G.add_node(f"{row.module}:{row.gene}", gene=row.gene, module=str(row.module), size=getattr(row, size_col))
    G.add_weighted_edges_from(edge_list)
    pos = nx.spring_layout(G, weight="weight", seed=seed)
    fig, ax = get_ax(ax, figsize)
    cats = [str(c) for c in hubs["module"].cat.categories] if hasattr(hubs["module"], "cat") else None
    colors = category_colors(gdata.uns, modules_key, cats or sorted(set(hubs["module"].astype(str))))
    nodes = list(G.nodes)
    size = np.array([G.nodes[v]["size"] for v in nodes], dtype=float)
    lo, hi = np.nanmin(size), np.nanmax(size)
    scaled = 80 + 420 * ((size - lo) / (hi - lo) if hi > lo else np.ones_like(size))
    widths = [0.5 + 3.0 * max(d["weight"], 0.0) for _, _, d in G.edges(data=True)]
    nx.draw_networkx_edges(G, pos, ax=ax, width=widths, edge_color="0.6", alpha=0.7)
    nx.draw_networkx_nodes(
        G,
        pos,
        ax=ax,
        nodelist=nodes,
        node_size=scaled,
        node_color=[colors[G.nodes[v]["module"]] for v in nodes],
        edgecolors="black",
        linewidths=0.5,
    )
    if labels:
        nx.draw_networkx_labels(G, pos, ax=ax, labels={v: G.nodes[v]["gene"] for v in nodes}, font_size=7)
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker="o", linestyle="", color=colors[m], label=m)
        for m in dict.fromkeys(G.nodes[v]["module"] for v in nodes)
    ]
    ax.legend(handles=handles, title=modules_key, loc="best", fontsize=7, frameon=False)
    ax.set_title(f"hub genes ({size_col}; edges: {edges})")
    ax.set_axis_off()
    return finish(fig, ax, show=show, save=save)
