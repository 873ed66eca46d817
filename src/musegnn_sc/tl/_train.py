"""One-call MuSe-GNN training on a MuData (torch is imported only when the function runs)."""

from __future__ import annotations

import inspect
import numbers
import os
import warnings
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData

from musegnn_sc import _logging as logg
from musegnn_sc._keys import EMBEDDING, GraphKeys

#: Options of :func:`musegnn_sc.pp.build_coexpression_graphs` that ``train_musegnn`` sets itself.
_OWN_GRAPH_OPTIONS = {"mods": "mods", "key_added": "graph_key", "copy": None}


class _Undo:
    """Remember the slots a call may write, to put them back as they were if the call fails."""

    def __init__(self) -> None:
        self._slots: list[tuple[Any, str, bool, Any]] = []

    def keep(self, mapping: MutableMapping | Any, key: str) -> None:
        had = key in mapping
        old = mapping[key] if had else None
        if isinstance(old, pd.Series):
            old = old.copy()  # a DataFrame column
        self._slots.append((mapping, key, had, old))

    def restore(self) -> None:
        for mapping, key, had, old in reversed(self._slots):
            if had:
                mapping[key] = old
            elif key in mapping:
                del mapping[key]


@contextmanager
def _about(name: str) -> Iterator[None]:
    """Prefix the modality's name to an input error that does not name it."""
    try:
        yield
    except (KeyError, ValueError, TypeError) as err:
        text = str(err.args[0]) if err.args else str(err)
        if repr(name) in text:
            raise
        raise type(err)(f"Modality {name!r}: {text}") from None


def _check_raw_counts(adata: AnnData, name: str, opts: Mapping[str, Any]) -> None:
    """The checks the graph builder runs first, with the modality named in the error."""
    from musegnn_sc._validate import check_counts, check_shape, check_unique_var_names, get_matrix
    from musegnn_sc.pp._graph import _per_mod, resolve_omics

    what = f"modality {name!r}"
    if adata.isbacked:
        msg = (
            f"Modality {name!r} is backed (read with `backed=True`), and its graph must be built (none under "
            "`graph_key`, or `rebuild=True`): building a co-expression graph needs its counts in memory. Read the "
            "MuData without `backed=True`, or "
            f"load this modality with `mdata.mod[{name!r}] = mdata.mod[{name!r}].to_memory()` first."
        )
        raise ValueError(msg)
    with _about(name):
        resolve_omics(
            adata, _per_mod(opts.get("omics"), name), name=name, spatial_key=opts.get("spatial_key", "spatial")
        )
        check_shape(adata, what=what)
        lay = _per_mod(opts.get("layer"), name)
        check_counts(get_matrix(adata, lay), layer=lay)
        check_unique_var_names(adata, what=what)


def _differing_params(adata: AnnData, graph_key: str, graph_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The options of ``graph_kwargs`` that the existing graph of ``adata`` was built with other values of."""
    from musegnn_sc.pp._graph import _PARAM_KEYS, _uns_value

    params = dict(adata.uns[graph_key].get("params", {}))
    return {
        k: params.get(k, "not recorded")
        for k, v in graph_kwargs.items()
        if k in (*_PARAM_KEYS, "selection")
        and v is not None
        and not isinstance(v, Mapping)
        and (k not in params or params[k] != _uns_value(v))
    }


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
    offload: bool | Literal["auto"] = "auto",
    offload_dir: str | os.PathLike | None = None,
    max_epochs: int | None = None,
    seed: int = 0,
    graph_kwargs: Mapping[str, Any] | None = None,
    rebuild: bool = False,
    key_added: str = EMBEDDING,
    return_model: bool = False,
    **train_kwargs: Any,
) -> AnnData | tuple[AnnData, Any]:
    """Train MuSe-GNN on every dataset of a MuData and return the gene embeddings.

    Builds the co-expression graph of each modality that has none (with
    :func:`musegnn_sc.pp.build_coexpression_graphs` and its defaults, updated by ``graph_kwargs``; logged), trains a
    new :class:`musegnn_sc.model.MuSeGNN` model and returns its gene-level AnnData.

    Every modality is checked before anything is written (the error names the modality that fails), and the call
    writes all or nothing: if a check, a graph, or training fails, the MuData is left as it was (no new graph, no
    ``uns['musegnn_setup']``, no ``varm[key_added]``).

    Each call trains a new model from scratch (new random weights, an empty history), even on a MuData that already
    holds embeddings from an earlier call, whose ``varm[key_added]`` it replaces. To continue training a model
    instead, keep it with ``return_model=True`` and call its :meth:`~musegnn_sc.model.MuSeGNN.train` again, then
    :meth:`~musegnn_sc.model.MuSeGNN.get_gene_embeddings`.

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
    n_latent, share_by, decoder, attention, offload, offload_dir
        Model options (see :class:`musegnn_sc.model.MuSeGNN`).
    max_epochs
        Training epochs (``None``: the default of :meth:`musegnn_sc.model.MuSeGNN.train`).
    seed
        Seed of the weight initialisation and of every random draw of training.
    graph_kwargs
        Options of :func:`musegnn_sc.pp.build_coexpression_graphs` for the graphs built here (``n_top_genes``,
        ``pval_cutoff``, ``n_jobs``, ...). Graphs that already exist are kept: if every modality has one, the options
        are ignored with a warning; if the graphs kept were built with other values of them, a warning says so. Pass
        ``rebuild=True`` to build every graph again with these options.
    rebuild
        Build the graph of every modality used again (with ``graph_kwargs``), replacing the graphs under
        ``graph_key``.
    key_added
        ``varm`` key of each modality where its genes' embeddings are written.
    return_model
        Also return the trained model.
    **train_kwargs
        Options of :meth:`musegnn_sc.model.MuSeGNN.train` (learning rates, loss weights, ``sim_reduction``,
        ``contrastive_anchors``, ``early_stopping``, ``accelerator``, ``devices``, ``strategy``, ``checkpoint_dir``,
        ...). Unknown options raise a :class:`TypeError` before anything is computed. The defaults are those chosen
        on real data (authors' mean ``L_Sim``, InfoNCE over shared genes too); the paper's text is
        ``sim_reduction="sum", lambda_contrastive=0.01, contrastive_anchors="different"``.

    Returns
    -------
    Gene-level AnnData (one row per dataset and gene, ``obsm['X_musegnn']``, see
    :meth:`musegnn_sc.model.MuSeGNN.get_gene_embeddings`), and the model if ``return_model``. Each modality used
    also gets ``varm[key_added]`` (``n_vars x n_latent``, zero rows for genes outside its graph), and modalities
    without a graph (every modality used, with ``rebuild=True``) get one under ``graph_key``.

    Examples
    --------
    >>> import musegnn_sc as msg
    >>> import scanpy as sc
    >>> mdata = msg.datasets.toy_mudata(include_mouse=False)
    >>> gdata, model = msg.tl.train_musegnn(mdata, graph_kwargs={"n_top_genes": 300}, return_model=True)
    >>> sc.pp.neighbors(gdata, use_rep="X_musegnn")
    >>> sc.tl.leiden(gdata)

    Train 100 more epochs of the same model (a second ``train_musegnn`` call would start again from scratch):

    >>> model.train(max_epochs=100)
    >>> gdata = model.get_gene_embeddings()
    """
    from musegnn_sc._validate import resolve_mods
    from musegnn_sc.model._model import (
        SETUP_KEY,
        MuSeGNN,
        _check_mudata,
        _check_train_numbers,
        check_train_choices,
        check_train_kwargs,
    )
    from musegnn_sc.pp import build_coexpression_graphs

    # ---- arguments: nothing is computed or written before they all pass
    _check_mudata(mdata, "msg.tl.train_musegnn")
    names = resolve_mods(mdata, mods)
    if len(set(names)) < len(names):
        msg = f"`mods` lists a modality more than once: {names}."
        raise ValueError(msg)
    if not isinstance(key_added, str) or not key_added:
        msg = f"`key_added` must be a non-empty string, got {key_added!r}."
        raise TypeError(msg)
    if offload not in (True, False, "auto"):
        msg = f"`offload` must be True, False or 'auto', got {offload!r}."
        raise ValueError(msg)
    if offload_dir is not None and not os.path.isdir(offload_dir):
        msg = f"`offload_dir` {str(offload_dir)!r} is not a directory. Create it, or pass an existing folder."
        raise FileNotFoundError(msg)
    if key_added == GraphKeys(graph_key).features:
        msg = f"`key_added={key_added!r}` would overwrite the node features of the graphs: choose another key."
        raise ValueError(msg)
    if features not in ("graph", "expression"):
        msg = f"`features` must be 'graph' or 'expression', got {features!r}."
        raise ValueError(msg)
    check_train_kwargs(train_kwargs, caller="msg.tl.train_musegnn")
    check_train_choices(train_kwargs, offloaded=offload is True)
    _check_train_numbers({**({} if max_epochs is None else {"max_epochs": max_epochs}), "seed": seed, **train_kwargs})
    for option, value, allowed in (
        ("share_by", share_by, ("omics", "omics_tissue")),
        ("decoder", decoder, ("mlp", "inner_product")),
        ("attention", attention, ("auto", "dense", "sparse")),
    ):
        if value not in allowed:
            msg = f"`{option}` must be one of {', '.join(map(repr, allowed))}, got {value!r}."
            raise ValueError(msg)
    if isinstance(n_latent, bool) or not isinstance(n_latent, numbers.Integral) or n_latent < 1:
        msg = f"`n_latent` must be a positive integer, got {n_latent!r}."
        raise ValueError(msg)
    graph_kwargs = dict(graph_kwargs or {})
    own = [k for k in graph_kwargs if k in _OWN_GRAPH_OPTIONS]
    if own:
        fixes = ", ".join(
            f"`{k}`: pass `{_OWN_GRAPH_OPTIONS[k]}=` to `train_musegnn`"
            if _OWN_GRAPH_OPTIONS[k]
            else f"`{k}`: not used"
            for k in own
        )
        msg = f"`graph_kwargs` sets options that `train_musegnn` sets itself ({fixes})."
        raise TypeError(msg)
    builder_args = set(inspect.signature(build_coexpression_graphs).parameters) - {"mdata"}
    unknown = [k for k in graph_kwargs if k not in builder_args]
    if unknown:
        msg = (
            f"`graph_kwargs` has option(s) {unknown} that `msg.pp.build_coexpression_graphs` does not take "
            f"(it takes {', '.join(sorted(builder_args - set(_OWN_GRAPH_OPTIONS)))})."
        )
        raise TypeError(msg)
    keys = GraphKeys(graph_key)
    to_build = list(names) if rebuild else [m for m in names if keys.uns not in mdata.mod[m].uns]
    kept = [m for m in names if m not in to_build]
    if graph_kwargs and not to_build:
        warnings.warn(
            f"`graph_kwargs` {sorted(graph_kwargs)} ignored: every modality already has a graph under "
            f"{graph_key!r}, and existing graphs are kept. Pass `rebuild=True` to build them again with these "
            "options, or build them with `msg.pp.build_coexpression_graphs(mdata, ...)` first.",
            UserWarning,
            stacklevel=2,
        )
    elif graph_kwargs and kept:
        differ = {m: d for m in kept if (d := _differing_params(mdata.mod[m], graph_key, graph_kwargs))}
        if differ:
            warnings.warn(
                f"`graph_kwargs` apply to the graphs built now ({to_build}); modalities {list(differ)} keep graphs "
                f"built with other values of them ({differ}). Pass `rebuild=True` to build every graph with the same "
                "options.",
                UserWarning,
                stacklevel=2,
            )

    # ---- every modality: the graphs kept are read, those to build have counts the builder accepts
    opts = {"layer": layer, **graph_kwargs}
    if kept:
        from musegnn_sc.model._data import read_graphs

        read_graphs(mdata, graph_key=graph_key, mods=kept, features=features, layer=layer)
    for name in to_build:
        _check_raw_counts(mdata.mod[name], name, opts)

    # ---- write: graphs, setup, training, embeddings; put everything back if any step fails
    undo = _Undo()
    try:
        if to_build:
            for name in to_build:
                ad = mdata.mod[name]
                for slot, key in (
                    (ad.uns, keys.uns),
                    (ad.varp, keys.connectivities),
                    (ad.varp, keys.correlation),
                    (ad.varm, keys.features),
                    (ad.var, keys.gene),
                    (ad.var, keys.selection_rank),
                    (ad.var, keys.selection_score),
                ):
                    undo.keep(slot, key)
                why = "rebuild=True" if keys.uns in ad.uns else f"no `uns[{graph_key!r}]` yet"
                logg.logger.info("building the co-expression graph of %r (%s)", name, why)
            build_coexpression_graphs(mdata, mods=to_build, key_added=graph_key, **opts)
        undo.keep(mdata.uns, SETUP_KEY)
        MuSeGNN.setup_mudata(mdata, graph_key=graph_key, mods=names, features=features, layer=layer)
        model = MuSeGNN(mdata, n_latent=n_latent, share_by=share_by, decoder=decoder, attention=attention, seed=seed,
                        offload=offload, offload_dir=offload_dir)  # fmt: skip
        if max_epochs is not None:
            train_kwargs["max_epochs"] = max_epochs
        model.train(seed=seed, **train_kwargs)
        if not model.is_trained_:
            # Ctrl-C or a NaN loss before the first epoch ended: the weights are the random initial ones, so write
            # nothing (the train warning said why) rather than embeddings that mean nothing
            msg = (
                "Training stopped before its first epoch was complete (see the warning above): nothing was written. "
                "Run `train_musegnn` again (lower the learning rates if the loss became NaN)."
            )
            raise RuntimeError(msg)
        gdata = model.get_gene_embeddings()
        emb = model.get_latent_representation()
        full = {}
        for g in model.graphs:
            adata = mdata.mod[g.name]
            mask = np.asarray(adata.var[adata.uns[graph_key].get("gene_key", keys.gene)], dtype=bool)
            full[g.name] = np.zeros((adata.n_vars, emb[g.name].shape[1]), dtype=np.float32)
            full[g.name][mask] = emb[g.name]
    except BaseException:
        undo.restore()
        raise
    for name, rows in full.items():
        mdata.mod[name].varm[key_added] = rows
    logg.logger.info("    stored the gene embeddings in `varm[%r]` of %d modalities", key_added, len(full))
    return (gdata, model) if return_model else gdata
