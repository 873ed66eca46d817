"""One-call MuSe-GNN training on a MuData (torch is imported only when the function runs)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from anndata import AnnData
from mudata import MuData

from musegnn_sc import _logging as logg
from musegnn_sc._keys import EMBEDDING, GraphKeys


def train_musegnn(
    mdata: MuData,
    *,
    graph_key: str = "coexpression",
    mods: Sequence[str] | None = None,
    features: Literal["graph", "expression"] = "graph",
    layer: str | None = None,
    n_latent: int = 32,
    share_by: Literal["omics", "omics_tissue"] = "omics",
    decoder: Literal["mlp", "inner_product"] = "mlp",
    attention: Literal["auto", "dense", "sparse"] = "auto",
    max_epochs: int = 300,
    seed: int = 0,
    graph_kwargs: Mapping[str, Any] | None = None,
    key_added: str = EMBEDDING,
    return_model: bool = False,
    **train_kwargs: Any,
) -> AnnData | tuple[AnnData, Any]:
    """Train MuSe-GNN on every dataset of a MuData and return the gene embeddings.

    Builds the co-expression graph of each modality that has none (with
    :func:`musegnn_sc.pp.build_coexpression_graph` and its defaults, updated by ``graph_kwargs``; logged), trains a
    :class:`musegnn_sc.model.MuSeGNN` model and returns its gene-level AnnData.

    Parameters
    ----------
    mdata
        MuData with one modality per dataset (unpaired: modalities need not share cells).
    graph_key
        Key of the co-expression graphs (``key_added`` of the graph builder).
    mods
        Modalities to use (default: all).
    features
        Node features, ``'graph'`` or ``'expression'`` (see :meth:`musegnn_sc.model.MuSeGNN.setup_mudata`).
    layer
        Layer with raw counts, used to build missing graphs and for ``features='expression'``.
    n_latent, share_by, decoder, attention
        Model options (see :class:`musegnn_sc.model.MuSeGNN`).
    max_epochs
        Training epochs.
    seed
        Seed of the weight initialisation and of every random draw of training.
    graph_kwargs
        Options of :func:`musegnn_sc.pp.build_coexpression_graph` for the graphs built here.
    key_added
        ``varm`` key of each modality where its genes' embeddings are written.
    return_model
        Also return the trained model.
    **train_kwargs
        Options of :meth:`musegnn_sc.model.MuSeGNN.train` (learning rates, loss weights, ``sim_reduction``,
        ``contrastive_anchors``, ``early_stopping``, ``accelerator``, ``devices``, ``strategy``, ``checkpoint_dir``,
        ...). Its defaults are those chosen on real data (authors' mean ``L_Sim``, InfoNCE over shared genes too);
        the paper's text is ``sim_reduction="sum", lambda_contrastive=0.01, contrastive_anchors="different"``.

    Returns
    -------
    Gene-level AnnData (one row per dataset and gene, ``obsm['X_musegnn']``, see
    :meth:`musegnn_sc.model.MuSeGNN.get_gene_embeddings`), and the model if ``return_model``. Each modality used
    also gets ``varm[key_added]`` (``n_vars x n_latent``, zero rows for genes outside its graph), and modalities
    without a graph get one under ``graph_key``.

    Examples
    --------
    >>> import musegnn_sc as msg
    >>> import scanpy as sc
    >>> mdata = msg.datasets.toy_mudata(include_mouse=False)
    >>> gdata = msg.tl.train_musegnn(mdata, graph_kwargs={"n_top_genes": 300})
    >>> sc.pp.neighbors(gdata, use_rep="X_musegnn")
    >>> sc.tl.leiden(gdata)
    """
    from musegnn_sc.model._model import MuSeGNN

    names = list(mdata.mod.keys()) if mods is None else list(mods)
    missing = [m for m in names if m not in mdata.mod]
    if missing:
        msg = f"Modalities {missing} are not in the MuData (available: {list(mdata.mod.keys())})."
        raise KeyError(msg)
    keys = GraphKeys(graph_key)
    to_build = [m for m in names if keys.uns not in mdata.mod[m].uns]
    if to_build:
        from musegnn_sc.pp import build_coexpression_graph

        opts = {"layer": layer, **dict(graph_kwargs or {})}
        for name in to_build:
            t0 = logg.start(f"building the co-expression graph of {name!r} (no `uns[{graph_key!r}]` yet)")
            build_coexpression_graph(mdata.mod[name], key_added=graph_key, **opts)
            logg.finish(f"graph of {name!r} stored under {graph_key!r}", t0)
    MuSeGNN.setup_mudata(mdata, graph_key=graph_key, mods=names, features=features, layer=layer)
    model = MuSeGNN(mdata, n_latent=n_latent, share_by=share_by, decoder=decoder, attention=attention, seed=seed)
    model.train(max_epochs=max_epochs, seed=seed, **train_kwargs)
    gdata = model.get_gene_embeddings()
    emb = model.get_latent_representation()
    for g in model.graphs:
        adata = mdata.mod[g.name]
        mask = np.asarray(adata.var[adata.uns[graph_key].get("gene_key", keys.gene)], dtype=bool)
        full = np.zeros((adata.n_vars, emb[g.name].shape[1]), dtype=np.float32)
        full[mask] = emb[g.name]
        adata.varm[key_added] = full
    logg.logger.info("    stored the gene embeddings in `varm[%r]` of %d modalities", key_added, len(model.graphs))
    return (gdata, model) if return_model else gdata
