"""A gene's neighbourhood in one dataset's co-expression graph (ego graph), drawn with matplotlib alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes
from scipy import sparse

from musegnn_sc._docs import doc_ax_show_save, doc_params, doc_returns_axes
from musegnn_sc._keys import COEXPRESSION, GraphKeys

from ._utils import finish, get_ax


def ego_graph(
    connectivities, correlation, genes, gene: str, *, max_neighbors: int = 20
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Neighbours of ``gene`` and the correlation matrix among the ego graph's nodes (arrays in, arrays out).

    Parameters
    ----------
    connectivities, correlation
        Sparse gene x gene adjacency and correlation (same pattern).
    genes
        Names of the rows.
    gene
        The centre.
    max_neighbors
        Keep the neighbours of largest absolute correlation.

    Returns
    -------
    ``nodes`` (centre first), ``adj`` (boolean nodes x nodes, no self-loops) and ``corr`` (nodes x nodes, NaN off
    the graph's edges).
    """
    genes = np.asarray(genes).astype(str)
    where = np.flatnonzero(genes == gene)
    if where.size == 0:
        msg = f"Gene {gene!r} is not in the dataset."
        raise KeyError(msg)
    i = int(where[0])
    A = sparse.csr_matrix(connectivities)
    C = sparse.csr_matrix(correlation) if correlation is not None else A
    row = A[i].toarray().ravel().astype(bool)
    row[i] = False
    nbrs = np.flatnonzero(row)
    if nbrs.size == 0:
        msg = f"Gene {gene!r} has no neighbour in the co-expression graph (it is isolated or not a graph node)."
        raise ValueError(msg)
    strength = np.abs(C[i].toarray().ravel()[nbrs])
    nbrs = nbrs[np.argsort(-strength, kind="stable")[:max_neighbors]]
    idx = np.concatenate([[i], nbrs])
    adj = A[idx][:, idx].toarray().astype(bool)
    np.fill_diagonal(adj, False)
    corr = C[idx][:, idx].toarray().astype(float)
    corr[~adj] = np.nan
    return genes[idx].tolist(), adj, corr


@doc_params(ax_show_save=doc_ax_show_save, returns_axes=doc_returns_axes)
def coexpression(
    adata: AnnData,
    gene: str,
    *,
    key: str = COEXPRESSION,
    max_neighbors: int = 20,
    cmap: str = "RdBu_r",
    figsize: tuple[float, float] = (5.5, 5.0),
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Draw a gene's neighbourhood in a dataset's co-expression graph.

    The centre gene sits in the middle and its strongest neighbours on a circle (ordered by correlation); edges are
    coloured by the CS-CORE correlation stored with the graph, including edges between neighbours (thinner).

    Parameters
    ----------
    adata
        One dataset with a graph from :func:`musegnn_sc.pp.build_coexpression_graph` (``varp['<key>_connectivities']``
        and ``varp['<key>_correlation']``).
    gene
        Gene at the centre (a ``var_names`` entry).
    key
        Prefix the graph was stored with (``key_added`` of the graph builder).
    max_neighbors
        Show at most this many neighbours (those of largest absolute correlation).
    cmap
        Diverging colour map of the correlation (centred on 0).
    figsize
        Size of a new figure (when ``ax`` is ``None``).
    {ax_show_save}

    {returns_axes}

    Examples
    --------
    >>> msg.pl.coexpression(mdata["rna_heart_1"], "GENE0003")
    """
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize

    keys = GraphKeys(key)
    if keys.connectivities not in adata.varp:
        msg = (
            f"`adata.varp[{keys.connectivities!r}]` not found. Build the graph with "
            f"`msg.pp.build_coexpression_graph(adata, key_added={key!r})` first."
        )
        raise KeyError(msg)
    corr_m = adata.varp[keys.correlation] if keys.correlation in adata.varp else None
    nodes, adj, corr = ego_graph(
        adata.varp[keys.connectivities], corr_m, adata.var_names, gene, max_neighbors=max_neighbors
    )
    k = len(nodes) - 1
    order = np.argsort(-np.nan_to_num(corr[0, 1:]), kind="stable")
    angles = np.empty(k)
    angles[order] = np.linspace(0, 2 * np.pi, k, endpoint=False) + np.pi / 2
    pos = np.vstack([[0.0, 0.0], np.column_stack([np.cos(angles), np.sin(angles)])])

    fig, ax = get_ax(ax, figsize)
    norm = Normalize(-1, 1)
    colormap = plt.get_cmap(cmap)
    iu, ju = np.nonzero(np.triu(adj, 1))
    outer = iu > 0
    for sel, width, alpha, z in ((outer, 0.8, 0.45, 1), (~outer, 2.5, 0.95, 2)):
        if not sel.any():
            continue
        segs = np.stack([pos[iu[sel]], pos[ju[sel]]], axis=1)
        vals = np.nan_to_num(corr[iu[sel], ju[sel]])
        lc = LineCollection(segs, colors=colormap(norm(vals)), linewidths=width, alpha=alpha, zorder=z)
        ax.add_collection(lc)
    ax.scatter(pos[1:, 0], pos[1:, 1], s=120, c="white", edgecolors="black", linewidths=0.8, zorder=3)
    ax.scatter([0], [0], s=300, c="gold", edgecolors="black", linewidths=1.0, zorder=3)
    for (x, y), name, a in zip(pos[1:], nodes[1:], angles, strict=True):
        ax.text(1.12 * x, 1.12 * y, name, ha="left" if np.cos(a) >= 0 else "right", va="center", fontsize=7)
    ax.text(0, -0.13, nodes[0], ha="center", va="top", fontsize=9, fontweight="bold")
    mappable = plt.cm.ScalarMappable(norm=norm, cmap=colormap)
    fig.colorbar(mappable, ax=ax, label="correlation", shrink=0.6)
    ax.set_xlim(-1.6, 1.6)
    ax.set_ylim(-1.35, 1.35)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title(f"{nodes[0]}: {k} neighbour(s)")
    return finish(fig, ax, show=show, save=save)
