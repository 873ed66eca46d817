"""Reference mapping (scArches-style): query datasets embedded into the gene space of a trained MuSe-GNN model.

A *combined* model holds the reference's graphs first and the query's graphs after them. Its networks are those of
the reference (the dataset layers ``L_i`` and decoders of every reference dataset, the shared blocks ``D_m``) plus a
new ``L_i`` and a new decoder per query dataset. With ``freeze=True`` every reference parameter has
``requires_grad=False`` and is left out of the optimiser: the reference embeddings stay bit for bit what they were.
Training visits the query graphs only; each step's partner is drawn uniformly from all the other graphs (the
reference datasets and the other query datasets), so ``L_Sim`` pulls a query gene towards the same gene in the
reference space, and InfoNCE keeps the query's own genes near their graph neighbours. Frozen reference embeddings are
constant, so they are computed once per training run instead of once per step.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from musegnn_sc import _logging as logg

from ._data import read_graphs
from ._training import MuSeGNNTrainingPlan

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

    from ._model import MuSeGNN

#: ``obs`` column of :meth:`MuSeGNN.get_gene_embeddings` marking the rows of reference datasets.
REFERENCE_COLUMN = "reference"


class QueryTrainingPlan(MuSeGNNTrainingPlan):
    """The training plan of a combined model: steps on the query graphs, frozen parameters out of the optimiser.

    ``frozen`` are the graph indices whose embeddings cannot change during training (the reference datasets of a
    frozen model); they are encoded once per run and reused as partners.
    """

    def __init__(self, *args, frozen: list[int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.frozen = list(frozen or [])
        self._cache: dict[int, torch.Tensor] = {}

    def configure_optimizers(self):
        """Adam on the trainable parameters only, at the encoder and decoder learning rates."""
        return self._adam(
            [(self.module.encoder_parameters(), self.config.lr_encoder),
             (self.module.decoder_parameters(), self.config.lr_decoder)]
        )  # fmt: skip

    def encode_partner(self, j: int) -> torch.Tensor:
        """Embedding of partner ``j``: cached (and without gradient) for a frozen reference graph."""
        if j not in self.frozen:
            return super().encode_partner(j)
        z = self._cache.get(j)
        if z is None or z.device != self.device:
            with torch.no_grad():
                z = self.module.encode(j, self._graph(j)).detach()
            self._cache[j] = z
        return z

    def on_train_end(self) -> None:
        """Free the cached reference embeddings, then the base plan's clean-up."""
        self._cache.clear()
        super().on_train_end()


# ---------------------------------------------------------------------------------------------------- construction
def _as_reference(reference) -> MuSeGNN:
    from ._model import MODEL_FILE, MuSeGNN

    if isinstance(reference, MuSeGNN):
        return reference
    if isinstance(reference, str | os.PathLike):
        if not (Path(reference) / MODEL_FILE).exists():
            msg = (
                f"`reference` {str(reference)!r} is not a directory written by `MuSeGNN.save` (no {MODEL_FILE} in it). "
                "Pass a trained `MuSeGNN` or the directory it was saved to."
            )
            raise FileNotFoundError(msg)
        return MuSeGNN.load(reference)
    msg = f"`reference` must be a trained `MuSeGNN` or the directory of a saved one, got {type(reference).__name__}."
    raise TypeError(msg)


def load_query_data(cls, mdata_query: MuData, reference, *, freeze: bool = True, seed: int | None = None) -> MuSeGNN:
    """Implementation of :meth:`MuSeGNN.load_query_data` (documented there)."""
    from ._model import SETUP_KEY, _group_label, _setup_from_uns

    ref = _as_reference(reference)
    if not ref.is_trained_:
        warnings.warn(
            "The reference model is not trained: its embedding space is that of random weights, so mapping into it "
            "is meaningless. Train the reference first (`reference.train()`).",
            UserWarning,
            stacklevel=3,
        )
    if mdata_query.uns.get(SETUP_KEY) is None:
        logg.logger.info("query MuData not registered: calling `MuSeGNN.setup_mudata(mdata_query)` with its defaults.")
        cls.setup_mudata(mdata_query)
    setup = _setup_from_uns(mdata_query.uns[SETUP_KEY])
    queries = read_graphs(mdata_query, **setup)
    ref_names = [g.name for g in ref.graphs]
    clash = [g.name for g in queries if g.name in ref_names]
    if clash:
        msg = (
            f"Query modalit{'y' if len(clash) == 1 else 'ies'} {clash} {'has' if len(clash) == 1 else 'have'} the name "
            f"of a reference dataset (reference datasets: {ref_names}); names identify datasets in the combined model. "
            f"Rename the query modalities, e.g. build the query MuData with keys {[f'{n}_query' for n in clash]}, "
            "then call `MuSeGNN.setup_mudata` on it again."
        )
        raise ValueError(msg)
    init = dict(ref.init_params_)
    if seed is not None:
        init["seed"] = int(seed)
    share_by = init["share_by"]
    ref_groups = list(ref.module.group_names)
    new_groups = []
    for g in queries:
        label = _group_label(g, share_by)
        if label in ref_groups or label in new_groups:
            continue
        if freeze:
            what = f"omics {g.omics!r}" + (f" and tissue {g.tissue!r}" if share_by == "omics_tissue" else "")
            msg = (
                f"Query dataset {g.name!r} has {what} (shared block {label!r}), but the reference has shared layers "
                f"only for {ref_groups} (`share_by={share_by!r}`). With `freeze=True` its embeddings could not be "
                "aligned. Map it into a reference trained on that omics type, or pass `freeze=False` to create new "
                "shared layers for it (trained, with every reference parameter, on the query)."
            )
            raise ValueError(msg)
        new_groups.append(label)
    if new_groups:
        logg.logger.info("    new shared block(s) %s for the query (freeze=False)", new_groups)
    model = cls.__new__(cls)
    arena = ref.module.arena
    # a reference whose decoders are offloaded is an atlas: so is the combined model
    model._build([*ref.graphs, *queries], setup, init, offload=True if arena is not None else "auto",
                 offload_dir=arena.directory if arena is not None else None)  # fmt: skip
    state = {k: v.detach().cpu() for k, v in ref.module.state_dict().items()}
    result = model.module.load_state_dict(state, strict=False)
    del state
    ref.module.release_offloaded()  # the copy read the reference's decoders in, and wrote the combined model's
    model.module.release_offloaded()
    n_ref = len(ref.graphs)
    if result.unexpected_keys or any(not _is_query_key(k, n_ref, len(ref_groups)) for k in result.missing_keys):
        msg = "The reference's weights do not fit the combined model (internal error); please report it."
        raise RuntimeError(msg)
    ref_info = ref.query_ or {}
    info = {
        "n_reference": n_ref,
        "reference_datasets": ref_names,
        "freeze": bool(freeze),
        "new_groups": new_groups,
        "reference_setup": _plain(ref.setup_args_),
        "reference_train": _plain(ref.train_params_),
        "reference_history": [dict(r) for r in ref.history_],
        "reference_is_trained": bool(ref.is_trained_),
        "reference_query": _plain(ref_info) if ref_info else {},
    }
    apply_query(model, info)
    check_query_anchors(model, stacklevel=4)
    logg.logger.info(
        "query model: %d reference dataset(s) (%s), %d query dataset(s) (%s)",
        n_ref,
        "frozen" if freeze else "fine-tuned",
        len(queries),
        ", ".join(g.name for g in queries),
    )
    return model


def _is_query_key(key: str, n_ref: int, n_ref_groups: int) -> bool:
    """Whether a state-dict key belongs to a layer the reference does not have."""
    part, idx = key.split(".")[:2]
    if part in ("encoders", "decoders"):
        return int(idx) >= n_ref
    if part == "shared":
        return int(idx) >= n_ref_groups
    return False


def _plain(obj):
    """``obj`` with only the types ``torch.load(weights_only=True)`` reads (dicts, lists, str, numbers, bools)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def apply_query(model: MuSeGNN, info: dict[str, Any] | None) -> None:
    """Record the reference/query split of a combined model and freeze the reference's parameters if asked."""
    model.query_ = None if not info else dict(info)
    if not info:
        return
    frozen = reference_parameters(model) if info["freeze"] else set()
    for p in model.module.parameters():
        p.requires_grad_(id(p) not in frozen)


def reference_parameters(model: MuSeGNN) -> set[int]:
    """``id`` of every parameter of the reference: its datasets' ``L_i`` and decoders, and its shared blocks."""
    n_ref = int(model.query_["n_reference"])
    m = model.module
    n_groups = len(m.group_names) - len(model.query_["new_groups"])
    mods = [*m.encoders[:n_ref], *m.decoders[:n_ref], *m.shared[:n_groups]]
    return {id(p) for mod in mods for p in mod.parameters()}


def query_indices(model: MuSeGNN) -> list[int]:
    """Indices of the query graphs in ``model.graphs``."""
    return list(range(int(model.query_["n_reference"]), len(model.graphs)))


def query_plan(model: MuSeGNN):
    """``(plan class, keyword arguments, graphs an epoch steps on)`` of the training of a combined model."""
    n_ref = int(model.query_["n_reference"])
    frozen = list(range(n_ref)) if model.query_["freeze"] else []
    return QueryTrainingPlan, {"frozen": frozen}, query_indices(model)


def check_query_anchors(model: MuSeGNN, stacklevel: int = 3) -> None:
    """Warn about query datasets that share no gene with any reference dataset (they have no anchors)."""
    n_ref = int(model.query_["n_reference"])
    ref_genes = set().union(*(set(g.genes) for g in model.graphs[:n_ref]))
    for g in model.graphs[n_ref:]:
        if not (set(g.genes) & ref_genes):
            warnings.warn(
                f"Query dataset {g.name!r} shares no gene with any reference dataset: it has no anchors, so its "
                "embeddings are not aligned with the reference space (check that gene names use the same convention "
                "as the reference, e.g. symbols vs Ensembl IDs, and the same species).",
                UserWarning,
                stacklevel=stacklevel,
            )


def mark_reference(model: MuSeGNN, gdata: AnnData, include_reference: bool) -> AnnData:
    """Add ``obs['reference']`` to the gene embeddings of a combined model, and drop the reference rows if asked."""
    import pandas as pd

    if model.query_ is None:
        msg = (
            "`include_reference=False` selects the query datasets of a model made by `MuSeGNN.load_query_data`; this "
            "model has no query datasets. Leave `include_reference=True`."
        )
        raise ValueError(msg)
    ref_names = set(model.query_["reference_datasets"])
    gdata.obs[REFERENCE_COLUMN] = gdata.obs["dataset"].astype(str).isin(ref_names).to_numpy()
    params = gdata.uns["musegnn"]["params"]
    params["query"] = {
        "reference_datasets": list(model.query_["reference_datasets"]),
        "query_datasets": [g.name for g in model.graphs[int(model.query_["n_reference"]) :]],
        "freeze": bool(model.query_["freeze"]),
    }
    if include_reference:
        return gdata
    out = gdata[~gdata.obs[REFERENCE_COLUMN].to_numpy()].copy()
    for col in ("dataset", "omics", "tissue", "species"):
        if isinstance(out.obs[col].dtype, pd.CategoricalDtype):
            out.obs[col] = out.obs[col].cat.remove_unused_categories()
    return out
