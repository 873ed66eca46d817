"""One-call reference mapping: query datasets embedded into a trained MuSe-GNN model's gene space."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from anndata import AnnData
from mudata import MuData

from musegnn_sc import _logging as logg
from musegnn_sc._keys import EMBEDDING, GraphKeys
from musegnn_sc._validate import resolve_mods

#: Options of :meth:`MuSeGNN.train` that :func:`map_to_reference` takes from the reference's training by default.
_INHERITED = (
    "lr_encoder",
    "lr_decoder",
    "lambda_sim",
    "lambda_contrastive",
    "temperature",
    "n_contrastive",
    "sim_reduction",
    "symmetric_infonce",
    "reconstruction_fraction",
)


def map_to_reference(
    mdata_query: MuData,
    reference_model: Any,  # a MuSeGNN (not imported here: torch) or a str / os.PathLike
    *,
    graph_key: str = "coexpression",
    mods: Sequence[str] | None = None,
    features: Literal["graph", "expression"] = "graph",
    layer: str | None = None,
    max_epochs: int | None = None,
    freeze: bool = True,
    seed: int = 0,
    graph_kwargs: Mapping[str, Any] | None = None,
    key_added: str = EMBEDDING,
    include_reference: bool = True,
    return_model: bool = False,
    **train_kwargs: Any,
) -> AnnData | tuple[AnnData, Any]:
    """Embed query datasets into the gene space of a trained MuSe-GNN model (reference mapping).

    Builds the co-expression graph of each query modality that has none (:func:`musegnn_sc.pp.build_coexpression_graph`
    with its defaults updated by ``graph_kwargs``), makes the combined model with
    :meth:`musegnn_sc.model.MuSeGNN.load_query_data` (new dataset layers and decoders for the query, the reference
    frozen by default), trains it on the query datasets and returns the gene embeddings. The loss weights,
    learning rates, InfoNCE options and reconstruction fraction of the reference's training are reused unless given in
    ``train_kwargs``. The reference model is
    not modified.

    Parameters
    ----------
    mdata_query
        MuData with one modality per query dataset (unpaired), named differently from the reference's datasets.
    reference_model
        A trained :class:`musegnn_sc.model.MuSeGNN`, or a directory written by its ``save``.
    graph_key
        Key of the query's co-expression graphs (``key_added`` of the graph builder).
    mods
        Query modalities to map (default: all).
    features
        Node features of the query, ``'graph'`` or ``'expression'`` (see
        :meth:`musegnn_sc.model.MuSeGNN.setup_mudata`).
    layer
        Layer with raw counts, used to build missing graphs and for ``features='expression'``.
    max_epochs
        Training epochs of the query (default: as many as the reference was trained for; mapping one dataset costs
        about ``1 / n_datasets`` of an epoch of the reference collection).
    freeze
        Freeze every reference parameter (``False``: fine-tune everything, and create shared layers for a query
        omics type the reference has none for; the reference embeddings then move).
    seed
        Seed of the query layers' initialisation and of every random draw of training.
    graph_kwargs
        Options of :func:`musegnn_sc.pp.build_coexpression_graph` for the graphs built here.
    key_added
        ``varm`` key of each query modality where its genes' embeddings are written.
    include_reference
        Return the reference datasets' rows as well as the query's (``obs['reference']`` says which).
    return_model
        Also return the combined model.
    **train_kwargs
        Options of :meth:`musegnn_sc.model.MuSeGNN.train` (learning rates, loss weights, ``early_stopping``,
        ``accelerator``, ...).

    Returns
    -------
    Gene-level AnnData (one row per dataset and gene, ``obsm['X_musegnn']``, boolean ``obs['reference']``; see
    :meth:`musegnn_sc.model.MuSeGNN.get_gene_embeddings`), and the combined model if ``return_model``. Each query
    modality also gets ``varm[key_added]`` (``n_vars x n_latent``, zero rows for genes outside its graph), written
    for all query modalities or none, and ``mdata_query.uns['musegnn_setup']``; modalities without a graph get one
    under ``graph_key``.

    Examples
    --------
    >>> import mudata as md
    >>> import musegnn_sc as msg
    >>> mdata = msg.datasets.toy_mudata(include_mouse=False, include_atac=False, include_spatial=False)
    >>> reference = md.MuData({m: mdata.mod[m] for m in ("rna_heart_1", "rna_lung_1")})
    >>> _, model = msg.tl.train_musegnn(reference, graph_kwargs={"n_top_genes": 200}, return_model=True)
    >>> query = md.MuData({"rna_heart_2": mdata.mod["rna_heart_2"]})
    >>> gdata = msg.tl.map_to_reference(query, model, graph_kwargs={"n_top_genes": 200})
    >>> gdata.obs["reference"].value_counts()
    """
    from musegnn_sc.model._model import MuSeGNN
    from musegnn_sc.model._query import _as_reference

    reference = _as_reference(reference_model)
    names = resolve_mods(mdata_query, mods)
    if max_epochs is None:
        default = inspect.signature(MuSeGNN.train).parameters["max_epochs"].default
        max_epochs = max(len(reference.history_), int(reference.train_params_.get("max_epochs", 0))) or default
    inherited = {k: reference.train_params_[k] for k in _INHERITED if k in reference.train_params_}
    inherited = {k: v for k, v in inherited.items() if k not in train_kwargs}
    if inherited:
        logg.logger.info("    training options of the reference reused: %s", inherited)
    keys = GraphKeys(graph_key)
    to_build = [m for m in names if keys.uns not in mdata_query.mod[m].uns]
    built: dict[str, AnnData] = {}
    if to_build:
        from musegnn_sc.pp import build_coexpression_graph

        opts = {"layer": layer, **dict(graph_kwargs or {})}
        for name in to_build:
            t0 = logg.start(f"building the co-expression graph of query {name!r} (no `uns[{graph_key!r}]` yet)")
            try:
                built[name] = build_coexpression_graph(mdata_query.mod[name], key_added=graph_key, copy=True, **opts)
            except (ValueError, KeyError, TypeError) as err:
                msg = (
                    f"Query modality {name!r}: its co-expression graph could not be built ({err}). Nothing was written."
                )
                raise type(err)(msg) from err
            logg.finish(f"graph of {name!r} built", t0)
    elif graph_kwargs:
        import warnings

        warnings.warn(
            f"`graph_kwargs` is ignored: every query modality already has a graph under {graph_key!r}. Delete "
            f"`uns[{graph_key!r}]` of a modality to rebuild its graph.",
            UserWarning,
            stacklevel=2,
        )
    # Everything below works on a view whose graph modalities are the built copies: nothing of `mdata_query` changes
    # until training has succeeded.
    work = _with_mods(mdata_query, names, built)
    MuSeGNN.setup_mudata(work, graph_key=graph_key, mods=names, features=features, layer=layer)
    model = MuSeGNN.load_query_data(work, reference, freeze=freeze, seed=seed)
    model.train(max_epochs=int(max_epochs), seed=seed, **{**inherited, **train_kwargs})
    gdata = model.get_gene_embeddings(include_reference=include_reference)
    emb = model.get_latent_representation()
    out = {}
    for name in names:
        adata = work.mod[name]
        mask = np.asarray(adata.var[adata.uns[graph_key].get("gene_key", keys.gene)], dtype=bool)
        full = np.zeros((adata.n_vars, emb[name].shape[1]), dtype=np.float32)
        full[mask] = emb[name]
        out[name] = full
    # commit: built graphs, the setup record and the embeddings
    for name, b in built.items():
        _copy_graph(b, mdata_query.mod[name], graph_key)
    mdata_query.uns["musegnn_setup"] = work.uns["musegnn_setup"]
    for name, full in out.items():
        mdata_query.mod[name].varm[key_added] = full
    logg.logger.info("    stored the query gene embeddings in `varm[%r]` of %d modalities", key_added, len(out))
    return (gdata, model) if return_model else gdata


def _with_mods(mdata: MuData, names: list[str], built: dict[str, AnnData]) -> MuData:
    """A MuData of the chosen modalities (the built copies where a graph was built), sharing the user's objects."""
    import warnings

    import mudata as md

    with md.set_options(pull_on_update=False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="var_names are not unique")
        warnings.filterwarnings("ignore", message=".*not unique.*")
        return md.MuData({n: built.get(n, mdata.mod[n]) for n in names}, axis=mdata.axis)


def _copy_graph(src: AnnData, dst: AnnData, graph_key: str) -> None:
    """Copy the slots the graph builder wrote under ``graph_key`` from ``src`` to ``dst``."""
    prefix = f"{graph_key}_"
    for col in src.var.columns:
        if col.startswith(prefix):
            dst.var[col] = src.var[col].to_numpy()
    for slot in ("varp", "varm"):
        for k in getattr(src, slot):
            if k.startswith(prefix):
                getattr(dst, slot)[k] = getattr(src, slot)[k]
    dst.uns[graph_key] = src.uns[graph_key]
