"""The user-facing MuSe-GNN model, with the API of scvi-tools models."""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import tempfile
import threading
import warnings
from collections import Counter
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from scipy import sparse

from musegnn_sc import _logging as logg
from musegnn_sc._keys import EMBEDDING

from ._data import Features, GraphData, read_graphs

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

    from ._module import Attention, Decoder

ShareBy = Literal["omics", "omics_tissue"]

#: ``mdata.uns`` key where :meth:`MuSeGNN.setup_mudata` records its arguments.
SETUP_KEY = "musegnn_setup"
#: File name of a saved model inside its directory.
MODEL_FILE = "model.pt"
_FORMAT = 1


def _group_label(g: GraphData, share_by: ShareBy) -> str:
    if share_by == "omics":
        return g.omics
    if share_by == "omics_tissue":
        return f"{g.omics}_{g.tissue}"
    msg = f"`share_by` must be 'omics' or 'omics_tissue', got {share_by!r}."
    raise ValueError(msg)


@contextmanager
def _quiet_lightning(progress_bar: bool):
    """Silence Lightning's start-up chatter and its advice that does not apply to full-graph training."""
    from lightning.fabric.utilities.warnings import PossibleUserWarning

    names = ("lightning.pytorch", "lightning.fabric")
    levels = {n: logging.getLogger(n).level for n in names}
    if logg.logger.getEffectiveLevel() > logging.INFO:
        for n in names:
            logging.getLogger(n).setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=PossibleUserWarning)
            warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
            # resuming with a different `checkpoint_every` is harmless: the checkpoint callback's state is not needed
            warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`")
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*`isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
            yield
    finally:
        for n, lv in levels.items():
            logging.getLogger(n).setLevel(lv)


class MuSeGNN:
    """MuSe-GNN: gene embeddings learned jointly from the co-expression graphs of many datasets.

    Multimodal Similarity Learning Graph Neural Network (Liu et al., NeurIPS 2023). Each dataset ``i`` is a graph whose
    nodes are its genes and whose edges are significant co-expression (:func:`musegnn_sc.pp.build_coexpression_graphs`).
    The encoder of dataset ``i`` of omics type ``m`` is ``D_m(L_i(G_i))`` (paper eq. 2):

    - ``L_i``, specific to the dataset: a TransformerConv layer with ``heads_dataset`` (4) heads of width ``n_latent``,
      then GraphNorm and Mish;
    - ``D_m``, shared by every dataset of the same omics type (``share_by='omics'``, the paper) or of the same omics
      type and tissue (``share_by='omics_tissue'``, the authors' code): TransformerConv with ``heads_shared`` (2) heads,
      GraphNorm, Mish, TransformerConv with 1 head, plus a residual 1-head TransformerConv of the block input, giving
      an ``n_latent``-dimensional embedding (32 in the paper).

    A decoder per dataset reconstructs the graph from ``z z^T`` (an MLP, paper eq. 3). Training minimises, for each
    graph ``i`` and a partner ``j`` sampled from the others (Algorithm 1), the reconstruction loss ``L_BCE``, minus the
    cosine similarity of the genes ``i`` and ``j`` share weighted by the Jaccard overlap of their neighbourhoods
    (``L_Sim``), and ``lambda_c`` times an InfoNCE loss pulling each gene the pair does not share towards one of its
    graph neighbours (``L_InfoNCE``; by default also each gene the pair shares towards its own copy in the partner and
    away from the other genes, which keeps the space from collapsing). See :meth:`train` for the options.

    Differences from the authors' code, by design: node features are the graph builder's reduced features (so the
    first layer does not grow with the number of cells; the full profile is an option); graphs may have any number of
    genes; dense graphs run attention as dense masked matrix products (identical to ``TransformerConv``, far faster on
    graphs with 20-80% of gene pairs connected); every random draw is seeded.

    Parameters
    ----------
    mdata
        MuData with one modality per dataset, each holding a co-expression graph. Registered with
        :meth:`setup_mudata` (called with its defaults if it was not).
    n_latent
        Embedding dimension, also the width of every attention head.
    share_by
        Which datasets share the block ``D_m``: ``'omics'`` (paper) or ``'omics_tissue'`` (authors' code).
    heads_dataset
        Attention heads of the dataset-specific layer ``L_i``.
    heads_shared
        Attention heads of the first layer of ``D_m``.
    decoder
        ``'mlp'``: the paper's decoder, three ``Linear(n_genes, n_genes)`` layers applied to the rows of ``z z^T``
        (``3 n_genes^2`` parameters per dataset). ``'inner_product'``: ``a z z^T + b`` (two parameters), for very large
        graphs or atlases of hundreds of datasets.
    attention
        ``'dense'``: masked dense attention, cost ``O(n_genes^2)`` whatever the density. ``'sparse'``: PyG message
        passing, cost ``O(edges)`` but about 100x slower per edge. ``'auto'``: dense for graphs of at most 4,096 genes
        and density at least 1%.
    seed
        Seed of the weight initialisation.
    offload
        Where the per-dataset MLP decoders (three ``n_genes x n_genes`` layers: 3 M parameters, 48 MB of training
        state per 1,000-gene dataset) live. ``True``: in a temporary file mapped into memory, of which only the
        decoder of the step at hand is resident, so memory no longer grows with the number of datasets (the
        arithmetic, and the results, are the same bit for bit; each step reads and writes one decoder). ``False``: in
        memory. ``'auto'``: offload when the decoders' training state would exceed half of the available memory
        (hundreds of datasets). Lightning checkpoints (``checkpoint_dir=`` of :meth:`train`) still hold every decoder
        and its Adam moments (36 MB per 1,000-gene dataset), and ``strategy='ddp_spawn'`` cannot copy an offloaded
        model to its processes (use ``'ddp'``).
    offload_dir
        Folder of the temporary file (default: the system's temporary folder, ``TMPDIR``). The file is deleted at
        once and its space freed when the model is.

    Examples
    --------
    >>> import musegnn_sc as msg
    >>> mdata = msg.datasets.toy_mudata()
    >>> msg.pp.build_coexpression_graphs(mdata)
    >>> msg.model.MuSeGNN.setup_mudata(mdata)
    >>> model = msg.model.MuSeGNN(mdata)
    >>> model.train(max_epochs=100)
    >>> gdata = model.get_gene_embeddings()
    """

    def __init__(
        self,
        mdata: MuData,
        n_latent: int = 32,
        *,
        share_by: ShareBy = "omics",
        heads_dataset: int = 4,
        heads_shared: int = 2,
        decoder: Decoder = "mlp",
        attention: Attention = "auto",
        seed: int = 0,
        offload: bool | Literal["auto"] = "auto",
        offload_dir: str | os.PathLike | None = None,
    ):
        _check_mudata(mdata, "MuSeGNN")
        setup = mdata.uns.get(SETUP_KEY)
        if setup is None:
            logg.logger.info("MuData not registered: calling `MuSeGNN.setup_mudata(mdata)` with its defaults.")
            self.setup_mudata(mdata)
            setup = mdata.uns[SETUP_KEY]
        setup = _setup_from_uns(setup)
        gone = [m for m in setup["mods"] or [] if m not in mdata.mod]
        if gone:
            msg = (
                f"Modalities {gone} registered in `mdata.uns[{SETUP_KEY!r}]` are no longer in the MuData (available: "
                f"{list(mdata.mod.keys())}). Register the MuData again with `MuSeGNN.setup_mudata(mdata)` (its "
                "`mods=` chooses the modalities)."
            )
            raise KeyError(msg)
        graphs = read_graphs(mdata, **setup)
        init = {
            "n_latent": int(n_latent),
            "share_by": share_by,
            "heads_dataset": int(heads_dataset),
            "heads_shared": int(heads_shared),
            "decoder": decoder,
            "attention": attention,
            "seed": int(seed),
        }
        self._build(graphs, setup, init, offload=offload, offload_dir=offload_dir)

    # ------------------------------------------------------------------ construction
    def _build(
        self,
        graphs: list[GraphData],
        setup: dict[str, Any],
        init: dict[str, Any],
        *,
        offload: bool | str = "auto",
        offload_dir: str | os.PathLike | None = None,
    ) -> None:
        import torch

        from ._module import MuSeGNNModule, graph_tensors, use_dense
        from ._offload import mlp_decoder_parameters, should_offload

        if init["n_latent"] < 1 or init["heads_dataset"] < 1 or init["heads_shared"] < 1:
            msg = "`n_latent`, `heads_dataset` and `heads_shared` must be positive integers."
            raise ValueError(msg)
        if offload not in (True, False, "auto"):
            msg = f"`offload` must be True, False or 'auto', got {offload!r}."
            raise ValueError(msg)
        offloaded = should_offload(offload, [g.n_genes for g in graphs], init["decoder"])
        if offloaded:
            logg.logger.info(
                "    decoders offloaded to a file in %s (%.1f GB of training state on disk instead of in memory)",
                offload_dir if offload_dir is not None else tempfile.gettempdir(),
                16 * mlp_decoder_parameters(g.n_genes for g in graphs) / 1e9,
            )
        elif offload is True or offload_dir is not None:
            why = (
                "decoder='inner_product' has two parameters per dataset, nothing to offload"
                if init["decoder"] != "mlp"
                else f"the decoders are kept in memory with `offload={offload!r}`; pass `offload=True` to use it"
            )
            what = "`offload=True` is" if offload is True else "`offload_dir` is"
            warnings.warn(f"{what} ignored: {why}.", UserWarning, stacklevel=3)
        self.graphs: list[GraphData] = graphs
        self.setup_args_: dict[str, Any] = dict(setup)
        self.init_params_: dict[str, Any] = dict(init)
        self.groups = [_group_label(g, init["share_by"]) for g in graphs]
        self._dense = [use_dense(g.n_genes, g.density, init["attention"]) for g in graphs]
        self._tensors = [
            graph_tensors(g.features, g.adjacency, dense=d) for g, d in zip(graphs, self._dense, strict=True)
        ]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init["seed"])
            self.module = MuSeGNNModule(
                [g.features.shape[1] for g in graphs],
                [g.n_genes for g in graphs],
                self.groups,
                n_latent=init["n_latent"],
                heads_dataset=init["heads_dataset"],
                heads_shared=init["heads_shared"],
                decoder=init["decoder"],
                offload_dir=(offload_dir if offload_dir is not None else tempfile.gettempdir()) if offloaded else None,
            )
        self.module.eval()
        self.history_: list[dict[str, float]] = []
        self.is_trained_ = False
        self.train_params_: dict[str, Any] = {}
        self._pairs = None
        #: Reference/query split of a model made by :meth:`load_query_data` (``None`` for other models).
        self.query_: dict[str, Any] | None = None

    @classmethod
    def setup_mudata(
        cls,
        mdata: MuData,
        *,
        graph_key: str = "coexpression",
        mods: Sequence[str] | None = None,
        features: Features = "graph",
        layer: str | None = None,
    ) -> None:
        """Register a MuData of co-expression graphs for MuSe-GNN.

        Checks that every chosen modality holds a graph and records the arguments in ``mdata.uns['musegnn_setup']``
        (the only key written).

        Parameters
        ----------
        mdata
            MuData with one modality per dataset (not paired: modalities need not share cells).
        graph_key
            ``key_added`` the graphs were built with.
        mods
            Modalities to use (default: all, in MuData order).
        features
            Node features. ``'graph'``: those the graph builder stored (``varm['{graph_key}_features']``: by default
            each gene's Pearson-residual profile reduced to 128 dimensions, or the full profile over cells if the
            graphs were built with ``n_features=None``, as the authors' code). ``'expression'``: each gene's
            log-normalised, standardised expression across the cells of ``layer`` (one input per cell, as the
            authors' first layer).
        layer
            Layer with counts for ``features='expression'`` (``None``: ``X``).
        """
        _check_mudata(mdata, "MuSeGNN.setup_mudata")
        if features not in ("graph", "expression"):
            msg = f"`features` must be 'graph' or 'expression', got {features!r}."
            raise ValueError(msg)
        if mods is not None and not isinstance(mods, str) and len(set(mods)) < len(list(mods)):
            msg = f"`mods` lists a modality more than once: {list(mods)}."
            raise ValueError(msg)
        graphs = read_graphs(mdata, graph_key=graph_key, mods=mods, features=features, layer=layer)
        setup: dict[str, Any] = {"graph_key": graph_key, "mods": [g.name for g in graphs], "features": features}
        if layer is not None:
            setup["layer"] = layer
        mdata.uns[SETUP_KEY] = setup
        logg.logger.info(
            "registered %d dataset(s) for MuSe-GNN: %s",
            len(graphs),
            ", ".join(f"{g.name} ({g.n_genes} genes)" for g in graphs),
        )

    @classmethod
    def load_query_data(
        cls,
        mdata_query: MuData,
        reference: MuSeGNN | str | os.PathLike,
        *,
        freeze: bool = True,
        seed: int | None = None,
    ) -> MuSeGNN:
        """Map new datasets into a trained model's gene space (scArches-style reference mapping).

        Returns a new model that holds the reference's weights and graphs, and adds a dataset-specific layer ``L_i``
        and a decoder for each query dataset. With ``freeze=True`` every parameter of the reference (its datasets'
        layers and decoders, the shared blocks ``D_m`` of each omics type) is frozen, so :meth:`train` fits the
        query's new layers only and the reference embeddings do not move (bit for bit). :meth:`train` visits the
        query graphs only, with all three losses; each step's partner is drawn from every other graph (reference
        datasets and the other query datasets), so ``L_Sim`` pulls the query's genes onto the same genes of the
        reference. Neither the reference nor its MuData is modified. :func:`musegnn_sc.tl.map_to_reference` does
        this in one call.

        Parameters
        ----------
        mdata_query
            MuData with one modality per query dataset, each holding a co-expression graph. Registered with
            :meth:`setup_mudata` (called with its defaults if it was not). Its modality names must differ from the
            reference's dataset names.
        reference
            A trained :class:`MuSeGNN`, or a directory written by :meth:`save`.
        freeze
            ``True``: freeze every reference parameter. ``False``: fine-tune everything (the reference's layers
            move too, through the query steps), and create new shared layers for a query omics type (or omics and
            tissue, with ``share_by='omics_tissue'``) the reference has none for. With ``freeze=True`` such a query
            is an error, since a randomly initialised frozen block cannot be aligned.
        seed
            Seed of the initialisation of the query's layers (default: the reference's ``seed``).

        Returns
        -------
        The combined model (untrained until :meth:`train` is called). :meth:`get_gene_embeddings` returns the
        reference and query rows (``obs['reference']`` says which; ``include_reference=False`` for the query
        only); :meth:`save` and :meth:`load` keep the whole model, the reference included.

        Examples
        --------
        >>> import mudata as md
        >>> import musegnn_sc as msg
        >>> mdata = msg.datasets.toy_mudata(include_mouse=False, include_atac=False, include_spatial=False)
        >>> msg.pp.build_coexpression_graphs(mdata, n_top_genes=200)
        >>> reference = msg.model.MuSeGNN(md.MuData({m: mdata.mod[m] for m in ("rna_heart_1", "rna_lung_1")}))
        >>> reference.train(max_epochs=100)
        >>> model = msg.model.MuSeGNN.load_query_data(md.MuData({"rna_heart_2": mdata.mod["rna_heart_2"]}), reference)
        >>> model.train(max_epochs=100)
        >>> gdata = model.get_gene_embeddings()  # reference and query genes, `obs["reference"]` says which
        """
        from ._query import load_query_data

        return load_query_data(cls, mdata_query, reference, freeze=freeze, seed=seed)

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_epochs: int = 150,
        *,
        lr_encoder: float = 3e-3,
        lr_decoder: float = 1e-3,
        lambda_sim: float = 1.0,
        lambda_contrastive: float = 1.0,
        temperature: float = 0.07,
        n_contrastive: int = 100,
        sim_reduction: Literal["sum", "mean"] = "mean",
        contrastive_anchors: Literal["different", "all"] = "all",
        symmetric_infonce: bool = False,
        reconstruction_fraction: float = 0.25,
        decoder_precision: Literal["auto", "float32", "bfloat16"] = "auto",
        early_stopping: bool = False,
        early_stopping_patience: int = 30,
        early_stopping_min_delta: float = 0.0,
        accelerator: str = "auto",
        devices: int | str | list[int] = "auto",
        strategy: Any = "auto",
        seed: int = 0,
        progress_bar: bool = True,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 10,
        resume: bool = False,
        callbacks: list | None = None,
        **trainer_kwargs: Any,
    ) -> None:
        """Train the model (Algorithm 1 of the paper) with Lightning.

        One epoch visits every graph ``i`` once, in order; each visit is one Adam step on
        ``L_BCE(i) + lambda_sim L_Sim(i, j) + lambda_contrastive L_InfoNCE(i, j)`` for a partner ``j`` drawn uniformly
        from the other graphs and encoded with gradients. The defaults are those that won on real datasets nobody
        tuned on (``benchmarks/validate_defaults.py``, see the design notes): the authors' mean ``L_Sim`` and an
        InfoNCE that also contrasts the genes the two datasets share; the paper's text is
        ``sim_reduction='sum', lambda_contrastive=0.01, contrastive_anchors='different'``. Calling :meth:`train`
        again continues from the current weights (with a new optimiser) and appends to :attr:`history`. If training
        stops early (Ctrl-C, a NaN loss or an exception, which is re-raised), the model keeps the weights of its last
        complete epoch, :attr:`history` lists exactly those epochs, and the module is back in eval mode. For a model
        made by :meth:`load_query_data`, an epoch visits the query graphs only (partners are still drawn from every
        other graph), frozen parameters are not optimised, and :attr:`history` records the query's training.

        Parameters
        ----------
        max_epochs
            Number of epochs (the authors train 2,000). With the default learning rates the separation of the gene
            space and the downstream scores level off at 100-200 epochs on real data (see the design notes); the toy
            data need fewer. With ``resume=True``, the total including the epochs of the checkpoint.
        lr_encoder
            Adam learning rate of ``L_i`` and ``D_m``. With the paper's 1e-4, 300 epochs separate the gene space of real
            datasets nobody tuned on about half as well as 150 epochs at the default (see the design notes).
        lr_decoder
            Adam learning rate of the decoders (paper: 1e-3).
        lambda_sim
            Weight of ``L_Sim`` (paper: 1; 0 switches it off).
        lambda_contrastive
            Weight ``lambda_c`` of ``L_InfoNCE`` (paper: 0.01; 0 switches it off). The default 1 goes with
            ``contrastive_anchors='all'``: at 0.01 nothing but the reconstruction keeps unrelated genes apart.
        temperature
            InfoNCE temperature (paper: 0.07).
        n_contrastive
            Genes absent from the partner sampled (without replacement) per graph and step as InfoNCE anchors
            (authors' code: 100, with replacement); with ``contrastive_anchors='all'``, also the number of common genes
            sampled per step.
        sim_reduction
            ``'mean'`` (default): ``L_Sim`` averages the Jaccard-weighted cosine similarities over common genes
            (authors' code, which produced the paper's tables). ``'sum'``: sums them (paper text), which weights
            ``L_Sim`` about ``n_common`` times more and collapses the space: on seven real datasets nobody tuned on,
            random cross-dataset gene pairs end at cosine 0.91, a gene's own copies at 0.98 (see the design notes).
        contrastive_anchors
            Anchors of ``L_InfoNCE``. ``'all'`` (default): the genes absent from the partner (positive: a graph
            neighbour, as the paper) and up to ``n_contrastive`` genes common to both graphs, whose positive is the
            same gene's embedding in the partner and whose negatives are the other genes of the batch, so unrelated
            genes are pushed apart while copies are pulled together. ``'different'``: the paper's eq. 6, genes
            absent from the partner only. The paper's exact objective is ``sim_reduction='sum',
            lambda_contrastive=0.01, contrastive_anchors='different'``.
        symmetric_infonce
            ``False``: queries against keys (paper eq. 6). ``True``: NT-Xent over the pooled anchors and positives,
            as pytorch-metric-learning >= 2.2 computes the authors' ``SelfSupervisedLoss``.
        reconstruction_fraction
            Fraction of each graph's genes whose adjacency rows ``L_BCE`` reconstructs at a step, drawn anew at every
            step (1: every row, the paper). The MLP decoder acts on each row of ``z z^T`` alone, so a fraction is an
            unbiased estimate of the full loss at that fraction of the decoder's cost; a quarter trains a space as good
            as every row on real data (see the design notes) in about two thirds of the time per step.
        decoder_precision
            Arithmetic of the decoders' two ``n_genes x n_genes`` layers, the bulk of a training step. ``'bfloat16'``:
            bfloat16 products with float32 accumulation (inputs and first layer stay float32; the logits of the last
            bfloat16 layer are converted to float32 for the loss).
            ``'float32'``: float32 throughout. ``'auto'``: bfloat16 where the hardware computes it natively (a CUDA
            GPU of compute capability 8 or later; a CPU with AMX or AVX-512 BF16 instructions), float32 elsewhere; the
            choice is kept in ``train_params_['decoder_precision']``. Encoders, attention and embeddings are float32
            in every case.
        early_stopping
            Stop when the epoch's mean total loss has not improved by ``early_stopping_min_delta`` for
            ``early_stopping_patience`` epochs.
        early_stopping_patience, early_stopping_min_delta
            See ``early_stopping``.
        accelerator, devices, strategy
            Passed to :class:`lightning.pytorch.Trainer`: ``accelerator='gpu', devices=4, strategy='ddp'`` trains on 4
            GPUs. ``'ddp'``, ``'ddp_spawn'``, ``'ddp_fork'`` and ``'ddp_notebook'`` run MuSe-GNN's dataset-parallel
            strategy: the graphs of an epoch are dealt out to the processes, each decoder is trained and kept by one
            process, and only the shared blocks' and the used encoders' gradients are averaged at each step (see the
            scale page of the documentation). It cannot be combined with ``checkpoint_dir``. An offloaded model trains
            on the CPU only (``accelerator='auto'`` picks the CPU for it; a device is refused).
        seed
            Seed of every random draw of training (partners, InfoNCE anchors and neighbours). The same seed gives the
            same embeddings on the CPU.
        progress_bar
            Show a progress bar with the loss terms.
        checkpoint_dir
            Directory where a Lightning checkpoint (weights, optimiser, history) is written every
            ``checkpoint_every`` epochs (``last.ckpt``).
        checkpoint_every
            Epochs between checkpoints.
        resume
            Continue from ``checkpoint_dir/last.ckpt`` (written by an earlier call on the same data) up to
            ``max_epochs`` epochs in total; the result equals an uninterrupted run.
        callbacks
            Extra Lightning callbacks.
        **trainer_kwargs
            Other :class:`lightning.pytorch.Trainer` arguments.
        """
        import lightning.pytorch as pl
        import torch
        from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
        from torch.utils.data import DataLoader

        from ._denormals import set_flush_denormal_all_threads
        from ._distributed import RankSteps, dataset_parallel
        from ._pairs import PairCache, neighbour_lists
        from ._training import LossConfig, MuSeGNNTrainingPlan, collate_single

        check_train_kwargs(trainer_kwargs, caller="MuSeGNN.train")
        _check_train_numbers(locals())  # max_epochs >= 1 among them
        check_train_choices(locals(), offloaded=self.module.offloaded)
        config = LossConfig(
            lambda_sim=float(lambda_sim),
            lambda_contrastive=float(lambda_contrastive),
            temperature=float(temperature),
            n_contrastive=int(n_contrastive),
            sim_reduction=sim_reduction,
            contrastive_anchors=contrastive_anchors,
            symmetric_infonce=bool(symmetric_infonce),
            reconstruction_fraction=float(reconstruction_fraction),
            decoder_precision=decoder_precision,
            lr_encoder=float(lr_encoder),
            lr_decoder=float(lr_decoder),
            seed=int(seed),
        )
        self._check_anchors()
        if self._pairs is None:
            self._pairs = PairCache([g.genes for g in self.graphs], [g.adjacency for g in self.graphs])
        neighbours = [neighbour_lists(g.adjacency) for g in self.graphs]
        plan_cls, plan_kwargs, step_list = MuSeGNNTrainingPlan, {}, list(range(len(self.graphs)))
        if self.query_ is not None:
            from ._query import query_plan

            plan_cls, plan_kwargs, step_list = query_plan(self)  # steps on the query graphs, frozen reference
        steps = RankSteps(step_list)  # all of them in order; a rank's share under dataset-parallel training
        plan = plan_cls(
            self.module, self._tensors, self._pairs, neighbours, config, self.history_, steps=steps, **plan_kwargs
        )
        cbs = list(callbacks or [])
        if early_stopping:
            cbs.append(
                EarlyStopping(
                    monitor="train_loss",
                    patience=early_stopping_patience,
                    min_delta=early_stopping_min_delta,
                    mode="min",
                    check_on_train_epoch_end=True,
                )
            )
        ckpt_path = None
        if checkpoint_dir is not None:
            checkpoint_dir = Path(checkpoint_dir)
            cbs.append(
                ModelCheckpoint(
                    dirpath=checkpoint_dir,
                    filename="musegnn-{epoch}",
                    save_last=True,
                    save_top_k=1,
                    every_n_epochs=checkpoint_every,
                    save_on_train_epoch_end=True,
                )
            )
            if resume:
                last = checkpoint_dir / "last.ckpt"
                if last.exists():
                    ckpt_path = str(last)
                else:
                    warnings.warn(
                        f"`resume=True` but {last} does not exist: training starts from the current weights.",
                        UserWarning,
                        stacklevel=2,
                    )
        if self.module.offloaded and accelerator == "auto" and _accelerator_is_device("auto"):
            logg.logger.info("    offloaded decoders live in a file of this machine: training on the CPU")
        if self.module.offloaded and accelerator == "auto":
            accelerator = "cpu"  # the decoders' file is host memory; 'auto' would pick a GPU where there is one
        loader = DataLoader(steps, batch_size=1, shuffle=False, collate_fn=collate_single)
        kwargs = {
            "max_epochs": max_epochs,
            "accelerator": accelerator,
            "devices": devices,
            "strategy": dataset_parallel(strategy),
            "use_distributed_sampler": False,  # RankSteps deals the graphs out
            "logger": False,
            "enable_checkpointing": checkpoint_dir is not None,
            "enable_progress_bar": progress_bar,
            "enable_model_summary": False,
            "log_every_n_steps": 1,
            "num_sanity_val_steps": 0,
            "callbacks": cbs,
            "deterministic": False,
        }
        kwargs.update(trainer_kwargs)
        previous_params, n_before = self.train_params_, len(self.history_)
        self.train_params_ = {
            "max_epochs": int(max_epochs),
            **dict(config.__dict__.items()),
            "early_stopping": bool(early_stopping),
        }
        t0 = logg.start(f"training MuSe-GNN on {len(self.graphs)} graph(s) for up to {max_epochs} epochs")
        in_main = threading.current_thread() is threading.main_thread()
        prev_sigint = signal.getsignal(signal.SIGINT) if in_main else None
        interrupted = False
        error: BaseException | None = None
        trainer = None
        self.module.train()
        with _quiet_lightning(progress_bar):
            try:
                trainer = pl.Trainer(**kwargs)
                trainer.fit(plan, train_dataloaders=loader, ckpt_path=ckpt_path)
            except SystemExit as err:
                # Lightning answers Ctrl-C by tearing down and calling sys.exit(1); keep the model instead.
                if trainer is None or not trainer.interrupted:
                    error = err
                else:
                    interrupted = True
            except KeyboardInterrupt:
                interrupted = True
            except BaseException as err:  # noqa: BLE001 - re-raised below, once the model is consistent again
                error = err
            finally:
                set_flush_denormal_all_threads(False)  # also after an interrupt (the plan sets it at the start)
                if in_main and prev_sigint is not None:
                    signal.signal(signal.SIGINT, prev_sigint)
        if interrupted or error is not None:
            # Lightning skips `on_train_end` here: weights back to the last complete epoch, history to match
            plan.restore_last_complete_epoch()
        if trainer is not None:
            self.train_params_["world_size"] = int(trainer.world_size)
            self.train_params_["decoder_precision"] = plan.config.decoder_precision
        self.module = plan.module.cpu()
        self.module.eval()
        self.history_ = [dict(r) for r in plan.history]
        self.is_trained_ = len(self.history_) > 0
        self._tensors = [g.to(torch.device("cpu")) for g in self._tensors]
        if (error is not None or interrupted) and len(self.history_) == n_before:
            # no epoch of this call was kept: the parameters stay those that trained the epochs the model has
            self.train_params_ = previous_params
        if error is not None:
            error.add_note(
                f"MuSeGNN.train: training stopped; the model keeps the weights of its last complete epoch "
                f"({len(self.history_)} epoch(s) in the history, {len(self.history_) - n_before} of them from this "
                "call) and is in eval mode."
            )
            raise error
        if interrupted:
            warnings.warn(
                f"Training interrupted after {len(self.history_)} complete epoch(s); the model keeps the weights of "
                "the last complete epoch and its history. Call `train()` again to continue.",
                UserWarning,
                stacklevel=2,
            )
        if plan.nan_event is not None:
            epoch, i = plan.nan_event
            warnings.warn(
                f"The loss became NaN at epoch {epoch} (graph {self.graphs[i].name!r}); training stopped and the "
                f"weights of the last complete epoch ({len(self.history_)} epoch(s) in the history) were kept. Lower "
                "`lr_encoder`/`lr_decoder` or check the node features.",
                RuntimeWarning,
                stacklevel=2,
            )
        logg.finish(f"{len(self.history_)} epoch(s) in the history", t0)

    def _check_anchors(self) -> None:
        if self.query_ is not None:
            from ._query import check_query_anchors

            check_query_anchors(self, stacklevel=4)
            return
        if len(self.graphs) == 1:
            warnings.warn(
                f"Only one dataset ({self.graphs[0].name!r}): MuSe-GNN trains on the graph reconstruction loss alone "
                "(no partner graph for the similarity and contrastive losses).",
                UserWarning,
                stacklevel=3,
            )
            return
        # a gene counted in two datasets is an anchor for both (linear in the number of datasets)
        counts = Counter(x for g in self.graphs for x in set(g.genes))
        for g in self.graphs:
            if not any(counts[x] > 1 for x in g.genes):
                warnings.warn(
                    f"Dataset {g.name!r} shares no gene with any other dataset: it has no anchors, so its embeddings "
                    "are not aligned with the others (check that gene names use the same convention, e.g. symbols "
                    "vs Ensembl IDs, and the same species).",
                    UserWarning,
                    stacklevel=3,
                )

    # ------------------------------------------------------------------ results
    @property
    def history(self) -> pd.DataFrame:
        """Mean of each loss term per epoch (``loss``, ``bce``, ``sim``, ``infonce``), indexed by epoch."""
        from ._training import LOSS_TERMS

        if not self.history_:
            return pd.DataFrame(columns=list(LOSS_TERMS), index=pd.Index([], name="epoch", dtype=int), dtype=float)
        df = pd.DataFrame(self.history_)
        df["epoch"] = df["epoch"].astype(int)
        return df.set_index("epoch")[list(LOSS_TERMS)]

    def _warn_if_untrained(self, getter: str) -> None:
        if not self.is_trained_:
            warnings.warn(
                f"`MuSeGNN.{getter}` on a model that has not been trained: the embeddings come from random initial "
                "weights and mean nothing yet. Call `model.train()` first (or load a trained model with "
                "`MuSeGNN.load`).",
                UserWarning,
                stacklevel=3,
            )

    def get_latent_representation(self) -> dict[str, np.ndarray]:
        """Embedding of each dataset's genes, ``{dataset: n_genes x n_latent}``, in graph-node order.

        Warns if the model has not been trained (the embeddings would come from random weights).
        """
        self._warn_if_untrained("get_latent_representation")
        return self._latent()

    def _latent(self) -> dict[str, np.ndarray]:
        import torch

        self.module.eval()
        device = next(self.module.parameters()).device
        out = {}
        with torch.no_grad():
            for i, g in enumerate(self.graphs):
                z = self.module.encode(i, self._tensors[i].to(device))
                out[g.name] = z.cpu().numpy().astype(np.float32)
        return out

    def get_gene_embeddings(self, *, include_reference: bool = True) -> AnnData:
        """Gene-level AnnData with one row per (dataset, gene).

        Warns if the model has not been trained (the embeddings would come from random weights).

        Parameters
        ----------
        include_reference
            For a model made by :meth:`load_query_data`: ``True`` returns the rows of the reference and query
            datasets together, ``False`` the query rows only. Such a model's ``obs`` has a boolean column
            ``reference`` (the row belongs to a reference dataset) and ``uns['musegnn']['params']['query']`` names
            the reference and query datasets.

        Returns
        -------
        AnnData with index ``'<dataset>:<gene>'``; ``obs`` columns ``gene``, ``dataset``, ``omics``, ``tissue``,
        ``species`` and ``is_common`` (the gene is in the graph of every dataset), and ``gene_id`` (the
        ``var_names`` entry; equal to ``gene`` for datasets named by ``var_names``) when a graph was built with
        ``gene_symbols=``, so that ``gene`` holds the symbols datasets are matched by; the embedding in
        ``obsm['X_musegnn']`` (and in ``X``, so that scanpy functions work on it directly); the model parameters and
        the loss history in ``uns['musegnn']``.
        """
        from anndata import AnnData

        self._warn_if_untrained("get_gene_embeddings")
        emb = self._latent()
        common = set.intersection(*(set(g.genes) for g in self.graphs))
        obs = pd.concat(
            [
                pd.DataFrame(
                    {
                        "gene": g.genes.astype(str),
                        "dataset": g.name,
                        "omics": g.omics,
                        "tissue": g.tissue,
                        "species": g.species,
                        "is_common": [x in common for x in g.genes],
                    }
                )
                for g in self.graphs
            ],
            ignore_index=True,
        )
        if any(g.gene_ids is not None for g in self.graphs):
            obs["gene_id"] = np.concatenate(
                [(g.genes if g.gene_ids is None else g.gene_ids).astype(str) for g in self.graphs]
            )
        obs.index = (obs["dataset"] + ":" + obs["gene"]).to_numpy()
        for col in ("dataset", "omics", "tissue", "species"):
            obs[col] = pd.Categorical(obs[col], categories=list(dict.fromkeys(obs[col])))
        X = np.concatenate([emb[g.name] for g in self.graphs], axis=0)
        n_latent = X.shape[1]
        gdata = AnnData(X=X.copy(), obs=obs, var=pd.DataFrame(index=[f"musegnn_{k}" for k in range(n_latent)]))
        gdata.obsm[EMBEDDING] = X
        hist = self.history
        gdata.uns["musegnn"] = {
            "params": _h5_safe(
                {
                    "setup": self.setup_args_,
                    "model": self.init_params_,
                    "train": self.train_params_,
                    "groups": self.groups,
                }
            ),
            "history": {"epoch": hist.index.to_numpy(dtype=np.int64), **{c: hist[c].to_numpy(float) for c in hist}},
        }
        if self.query_ is not None or not include_reference:
            from ._query import mark_reference

            gdata = mark_reference(self, gdata, include_reference)
        return gdata

    # ------------------------------------------------------------------ persistence
    def save(self, dir_path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Save the model to ``dir_path/model.pt`` (weights, parameters, history and the graphs).

        The file holds tensors, lists, dicts and strings only, so :meth:`load` reads it with
        ``torch.load(weights_only=True)``, which runs no code from the file. It is written atomically: a new directory
        is written to a temporary sibling and renamed into place, and an existing model is replaced by writing a
        temporary file next to ``model.pt`` and renaming it over it, so an interrupted save never leaves a
        half-written model. The graphs are stored too, so :meth:`load` works without the MuData.

        Parameters
        ----------
        dir_path
            Directory to create.
        overwrite
            Replace the ``model.pt`` of an existing directory (other files in it are left alone).

        Examples
        --------
        >>> model.save("musegnn_model", overwrite=True)
        >>> model = msg.model.MuSeGNN.load("musegnn_model")
        """
        path = Path(dir_path)
        if path.exists() and not overwrite:
            msg = f"{path} already exists. Pass `overwrite=True` to replace it, or choose another directory."
            raise FileExistsError(msg)
        if path.exists() and not path.is_dir():
            msg = f"{path} exists and is a file, not a directory: `save` writes a directory. Choose another path."
            raise FileExistsError(msg)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": _FORMAT,
            "setup_args": self.setup_args_,
            "init_params": self.init_params_,
            "train_params": _h5_safe(self.train_params_),
            "history": [dict(r) for r in self.history_],
            "is_trained": bool(self.is_trained_),
            "state_dict": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
            "graphs": [_graph_payload(g) for g in self.graphs],
        }
        try:
            if self.query_ is not None:
                payload["query"] = dict(self.query_)
            payload["checksum"] = _checksum(payload)
            if path.exists():
                # only model.pt is replaced, by a rename within the directory: the user's other files stay
                fd, name = tempfile.mkstemp(prefix=f".{MODEL_FILE}.", suffix=".tmp", dir=path)
                os.close(fd)
                tmp_file = Path(name)
                try:
                    _save_durably(payload, tmp_file)
                    os.replace(tmp_file, path / MODEL_FILE)
                    _fsync_directory(path)
                finally:
                    tmp_file.unlink(missing_ok=True)
                return
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
            try:
                os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700: a model directory is as readable as any other
                _save_durably(payload, tmp / MODEL_FILE)
                os.replace(tmp, path)
                _fsync_directory(path.parent)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        finally:
            self.module.release_offloaded()  # the checksum and the write read every offloaded decoder page in

    @classmethod
    def load(
        cls,
        dir_path: str | os.PathLike,
        mdata: MuData | None = None,
        *,
        offload: bool | Literal["auto"] = "auto",
        offload_dir: str | os.PathLike | None = None,
    ) -> MuSeGNN:
        """Load a model saved with :meth:`save`.

        The file is read with ``torch.load(weights_only=True)`` (no code from the file runs). A missing directory
        raises :class:`FileNotFoundError`; a damaged, truncated or foreign file a :class:`ValueError` that names it.

        Parameters
        ----------
        dir_path
            Directory written by :meth:`save`.
        mdata
            Optional MuData to attach: it must hold every modality the model was trained on, and their graphs (read
            with the saved :meth:`setup_mudata` arguments) must have the saved genes. Without it, the graphs stored
            with the model are used. Either way the embeddings are those of the saved model, bit for bit.
        offload, offload_dir
            Where the loaded model keeps its decoders (see :class:`MuSeGNN`).

        Returns
        -------
        musegnn_sc.model.MuSeGNN
            The loaded model, in eval mode, with its history.

        Examples
        --------
        >>> model = msg.model.MuSeGNN.load("musegnn_model")
        >>> gdata = model.get_gene_embeddings()
        """
        path = Path(dir_path)
        file = path / MODEL_FILE
        if path.is_file():
            msg = (
                f"{path} is a file: `MuSeGNN.load` takes the directory given to `MuSeGNN.save` "
                f"(the one that holds {MODEL_FILE})."
            )
            raise ValueError(msg)
        if not file.exists():
            msg = f"No saved model at {file}. Pass the directory given to `MuSeGNN.save`."
            raise FileNotFoundError(msg)
        if mdata is not None:
            _check_mudata(mdata, "MuSeGNN.load")
        payload = _read_payload(file)
        try:
            saved = [_graph_from_payload(p) for p in payload["graphs"]]
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            msg = f"{file} is damaged: its stored graphs cannot be read ({type(err).__name__}: {err})."
            raise ValueError(msg) from None
        query = payload.get("query")
        n_ref = int(query["n_reference"]) if query else 0
        if mdata is None:
            graphs = saved
        else:
            # a combined model (`load_query_data`) keeps its reference graphs; `mdata` then holds the query datasets
            names = [s.name for s in saved[n_ref:]]
            missing = [n for n in names if n not in mdata.mod]
            if missing:
                msg = (
                    f"The MuData lacks modality(ies) {missing} of the model saved in {file} (its modalities: "
                    f"{list(mdata.mod.keys())}). Pass `mdata=` the MuData the model was trained on, with every "
                    "modality, or load without `mdata` to use the graphs saved with the model."
                )
                raise KeyError(msg)
            graphs = saved[:n_ref] + read_graphs(mdata, **{**payload["setup_args"], "mods": names})
            for g, s in zip(graphs, saved, strict=True):
                if g.name != s.name or not np.array_equal(g.genes, s.genes):
                    msg = (
                        f"Dataset {s.name!r} of the saved model does not match modality {g.name!r} of the MuData "
                        "(different names or genes). Load without `mdata`, or pass the MuData the model was "
                        "trained on."
                    )
                    raise ValueError(msg)
        model = cls.__new__(cls)
        try:
            model._build(
                graphs, payload["setup_args"], payload["init_params"], offload=offload, offload_dir=offload_dir
            )
            model.module.load_state_dict(payload["state_dict"])
            model.module.release_offloaded()  # the copy read every decoder page in
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            msg = (
                f"{file} is damaged or was written for other graphs: its weights do not fit the model it describes "
                f"({type(err).__name__}: {reason}). Save the model again with `model.save(dir, overwrite=True)`."
            )
            raise ValueError(msg) from None
        model.module.eval()
        model.history_ = [dict(r) for r in payload["history"]]
        model.is_trained_ = bool(payload["is_trained"])
        model.train_params_ = dict(payload["train_params"])
        if query:
            from ._query import apply_query

            apply_query(model, query)
        return model

    # ------------------------------------------------------------------ summary
    def __repr__(self) -> str:
        n_params = sum(p.numel() for p in self.module.parameters())
        genes = [g.n_genes for g in self.graphs]
        edges = [g.n_edges for g in self.graphs]
        groups = Counter(self.groups)
        lines = [
            f"MuSeGNN model with {len(self.graphs)} dataset(s), {sum(genes):,} genes ({len(set().union(*(set(g.genes) for g in self.graphs))):,} "
            f"distinct), {sum(edges):,} edges, {n_params:,} parameters.",
            f"  n_latent: {self.init_params_['n_latent']}, shared blocks by {self.init_params_['share_by']}: "
            + ", ".join(f"{k} ({v} dataset(s))" for k, v in groups.items())
            + f"; decoder: {self.init_params_['decoder']}",
            f"  trained: {'yes' if self.is_trained_ else 'no'} ({len(self.history_)} epoch(s))",
        ]
        if self.query_ is not None:
            n_ref = int(self.query_["n_reference"])
            lines.append(
                f"  reference mapping: {n_ref} reference dataset(s) "
                f"({'frozen' if self.query_['freeze'] else 'fine-tuned'}), {len(self.graphs) - n_ref} query dataset(s): "
                + ", ".join(g.name for g in self.graphs[n_ref:])
            )
        for g, dense in zip(self.graphs, self._dense, strict=True):
            lines.append(
                f"  - {g.name}: {g.omics}, {g.tissue}, {g.species}; {g.n_genes} genes, {g.n_edges:,} edges "
                f"(density {g.density:.2f}, {'dense' if dense else 'sparse'} attention), {g.features.shape[1]} features"
            )
        return "\n".join(lines)


#: What :meth:`MuSeGNN.save` writes: payload key -> type.
_PAYLOAD_TYPES = {
    "format": int,
    "setup_args": dict,
    "init_params": dict,
    "train_params": dict,
    "history": list,
    "is_trained": bool,
    "state_dict": dict,
    "graphs": list,
}
_GRAPH_KEYS = ("name", "omics", "tissue", "species", "genes", "features", "indptr", "indices", "n_genes")
_INIT_KEYS = ("n_latent", "share_by", "heads_dataset", "heads_shared", "decoder", "attention", "seed")


def _read_payload(file: Path) -> dict[str, Any]:
    """Read ``model.pt`` safely and check its layout; any problem is one :class:`ValueError` naming the file."""
    import pickle

    import torch

    fix = "Save the model again with `model.save(dir, overwrite=True)`, or pass the directory of another saved model."
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols of foreign files
            # mmap: tensors are read from the file as they are used (a model of hundreds of datasets is not copied
            # into memory whole before its weights go where they belong)
            payload = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        msg = (
            f"{file} is not a model saved by `MuSeGNN.save`: it holds Python objects other than tensors, lists and "
            f"dicts, which are not read (loading them could run code from the file). {fix}"
        )
        raise ValueError(msg) from None
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError, EOFError, KeyError, OSError ... here
        msg = (
            f"{file} cannot be read: it is damaged, truncated or not a file written by `MuSeGNN.save` "
            f"({type(err).__name__} while reading it). {fix}"
        )
        raise ValueError(msg) from None
    if not isinstance(payload, dict):
        msg = f"{file} holds a {type(payload).__name__}, not a model saved by `MuSeGNN.save`. {fix}"
        raise ValueError(msg)
    if "format" in payload and (not isinstance(payload["format"], int) or payload["format"] != _FORMAT):
        msg = (
            f"{file} has format {payload['format']!r}; this version of musegnn_sc reads format {_FORMAT}. "
            "Load it with the version that saved it, or save the model again."
        )
        raise ValueError(msg)
    missing = [k for k in _PAYLOAD_TYPES if k not in payload]
    wrong = [k for k, t in _PAYLOAD_TYPES.items() if k in payload and not isinstance(payload[k], t)]
    problems = []
    if missing:
        problems.append(f"missing entries {missing}")
    if wrong:
        problems.append(f"entries of the wrong type {wrong}")
    if not problems:
        init = payload["init_params"]
        if not all(k in init for k in _INIT_KEYS):
            problems.append(f"`init_params` lacks {[k for k in _INIT_KEYS if k not in init]}")
        if "mods" not in payload["setup_args"]:
            problems.append("`setup_args` lacks 'mods'")
        if not payload["graphs"]:
            problems.append("no graph")
        for n, g in enumerate(payload["graphs"]):
            if not isinstance(g, dict) or any(k not in g for k in _GRAPH_KEYS):
                problems.append(f"graph {n} is incomplete")
                break
        if not all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values()):
            problems.append("`state_dict` holds non-tensors")
    if problems:
        msg = f"{file} is not a complete model saved by `MuSeGNN.save` ({'; '.join(problems)}). {fix}"
        raise ValueError(msg)
    # files written before the checksum was added have none; a zip archive does not verify its records itself
    if "checksum" in payload and payload["checksum"] != _checksum(payload):
        msg = f"{file} is damaged: its weights or graphs differ from what was saved (checksum mismatch). {fix}"
        raise ValueError(msg)
    return payload


def _checksum(payload: dict[str, Any]) -> str:
    """SHA-256 of the weights and graphs of a payload (names, shapes, dtypes and bytes), with its parameters."""
    import hashlib

    import torch

    h = hashlib.sha256()

    def add(name: str, value: Any) -> None:
        h.update(name.encode())
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
        else:
            h.update(repr(value).encode())

    for key in ("format", "setup_args", "init_params", "train_params", "history", "is_trained"):
        add(key, payload.get(key))
    if "query" in payload:  # combined models only, so the checksums of other files are unchanged
        add("query", payload["query"])
    for k in sorted(payload["state_dict"]):
        add(f"state_dict/{k}", payload["state_dict"][k])
    for n, g in enumerate(payload["graphs"]):
        for k in _GRAPH_KEYS:
            add(f"graphs/{n}/{k}", g.get(k))
        if "gene_ids" in g:  # graphs built with `gene_symbols=` only, so other checksums are unchanged
            add(f"graphs/{n}/gene_ids", g["gene_ids"])
    return h.hexdigest()


def _check_mudata(mdata, caller: str) -> None:
    """Reject anything but a MuData, with the fix for the usual mistake (an AnnData)."""
    from anndata import AnnData
    from mudata import MuData

    if isinstance(mdata, MuData):
        return
    if isinstance(mdata, AnnData):
        msg = (
            f"`{caller}` takes a MuData with one modality per dataset, got an AnnData. Wrap a single dataset as "
            "`mudata.MuData({'rna': adata})` (several datasets: one modality each)."
        )
        raise TypeError(msg)
    msg = f"`{caller}` takes a MuData with one modality per dataset, got {type(mdata).__name__}."
    raise TypeError(msg)


#: Numeric options of :meth:`MuSeGNN.train`: (integer?, lowest allowed value, is the lowest value allowed?).
_TRAIN_NUMBERS = {
    "max_epochs": (True, 1, True),
    "lr_encoder": (False, 0, False),
    "lr_decoder": (False, 0, False),
    "lambda_sim": (False, 0, True),
    "lambda_contrastive": (False, 0, True),
    "temperature": (False, 0, False),
    "n_contrastive": (True, 1, True),
    "reconstruction_fraction": (False, 0, False),
    "early_stopping_patience": (True, 0, True),
    "early_stopping_min_delta": (False, 0, True),
    "checkpoint_every": (True, 1, True),
    "seed": (True, 0, True),
}


def _check_train_numbers(options: dict[str, Any]) -> None:
    """Type and range of the numeric options of :meth:`MuSeGNN.train`, checked before anything runs."""
    import numbers

    for name, (integer, low, inclusive) in _TRAIN_NUMBERS.items():
        if name not in options:
            continue
        value = options[name]
        kind = numbers.Integral if integer else numbers.Real
        if isinstance(value, bool) or not isinstance(value, kind):
            msg = f"`{name}` must be {'an integer' if integer else 'a number'}, got {value!r} ({type(value).__name__})."
            raise TypeError(msg)
        if not math.isfinite(value) or value < low or (value == low and not inclusive):
            msg = f"`{name}` must be {'at least' if inclusive else 'greater than'} {low}, got {value!r}."
            raise ValueError(msg)


def check_train_choices(options: dict[str, Any], *, offloaded: bool) -> None:
    """The options of :meth:`MuSeGNN.train` that take named values, and the combinations it refuses.

    ``options`` holds any of the method's arguments (absent ones take their defaults); ``offloaded``: whether the
    model's decoders are (or will be) offloaded. Checked before anything runs or is written.
    """
    import inspect
    import numbers

    defaults = {k: v.default for k, v in inspect.signature(MuSeGNN.train).parameters.items()}
    opt = {**defaults, **{k: v for k, v in options.items() if k in defaults}}
    for name, allowed in (
        ("sim_reduction", ("sum", "mean")),
        ("contrastive_anchors", ("different", "all")),
        ("decoder_precision", ("auto", "float32", "bfloat16")),
    ):
        if opt[name] not in allowed:
            msg = f"`{name}` must be {' or '.join(map(repr, allowed))}, got {opt[name]!r}."
            raise ValueError(msg)
    fraction = opt["reconstruction_fraction"]
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction <= 1:
        msg = f"`reconstruction_fraction` must be a number in (0, 1], got {fraction!r}."
        raise ValueError(msg)
    if opt["resume"] and opt["checkpoint_dir"] is None:
        msg = "`resume=True` needs the `checkpoint_dir` of the run to continue."
        raise ValueError(msg)
    from ._distributed import DatasetParallelStrategy, dataset_parallel

    if opt["checkpoint_dir"] is not None and isinstance(dataset_parallel(opt["strategy"]), DatasetParallelStrategy):
        msg = (
            f"`checkpoint_dir` cannot be combined with `strategy={opt['strategy']!r}`: under dataset-parallel training "
            "each process holds the decoders it trains, and a checkpoint written by one process would lack the others'. "
            "Train without `checkpoint_dir` (the model is complete when training ends, or after an interrupt), or in "
            "one process."
        )
        raise ValueError(msg)
    if offloaded and opt["accelerator"] != "auto" and _accelerator_is_device(opt["accelerator"]):
        msg = (
            f"The decoders are offloaded to a file on this machine, which a device cannot use "
            f"(`accelerator={opt['accelerator']!r}`). Train on the CPU (`accelerator='cpu'`), or build the model with "
            "`offload=False` to train on the device."
        )
        raise ValueError(msg)


def _accelerator_is_device(accelerator: Any) -> bool:
    """Whether Lightning's ``accelerator`` argument would train on a GPU or another device than the CPU."""
    import torch

    if isinstance(accelerator, str):
        name = accelerator.lower()
        if name == "cpu":
            return False
        if name == "auto":
            mps = getattr(torch.backends, "mps", None)
            return torch.cuda.is_available() or bool(mps is not None and mps.is_available())
        return True
    return type(accelerator).__name__ != "CPUAccelerator"


def check_train_kwargs(kwargs: dict[str, Any], *, caller: str) -> None:
    """Reject options that neither :meth:`MuSeGNN.train` nor :class:`lightning.pytorch.Trainer` takes, before any work."""
    import difflib
    import inspect

    import lightning.pytorch as pl

    trainer_args = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
    train_args = set(inspect.signature(MuSeGNN.train).parameters) - {"self", "trainer_kwargs"}
    unknown = [k for k in kwargs if k not in trainer_args | train_args]
    if not unknown:
        return
    hints = []
    for k in unknown:
        close = difflib.get_close_matches(k, sorted(train_args | trainer_args), n=1)
        if close:
            hints.append(f"`{k}` -> `{close[0]}`?")
    msg = (
        f"`{caller}` got unknown option(s) {unknown}: they are neither options of `MuSeGNN.train` nor arguments of "
        "`lightning.pytorch.Trainer`." + (f" Did you mean: {', '.join(hints)}" if hints else "")
    )
    raise TypeError(msg)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _save_durably(payload: dict[str, Any], file: Path) -> None:
    """``torch.save`` with the mode of a normally created file, flushed to disk before it is renamed into place."""
    import torch

    with open(file, "wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(file, 0o666 & ~_umask())  # mkstemp makes 0600: keep shared model directories readable


def _fsync_directory(path: Path) -> None:
    """Make a rename inside ``path`` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _setup_from_uns(setup) -> dict[str, Any]:
    out = {
        "graph_key": str(setup.get("graph_key", "coexpression")),
        "mods": [str(m) for m in setup["mods"]] if "mods" in setup else None,
        "features": str(setup.get("features", "graph")),
        "layer": str(setup["layer"]) if "layer" in setup else None,
    }
    return out


def _graph_payload(g: GraphData) -> dict[str, Any]:
    import torch

    adj = sparse.csr_matrix(g.adjacency)
    return {
        "name": g.name,
        "omics": g.omics,
        "tissue": g.tissue,
        "species": g.species,
        "genes": [str(x) for x in g.genes],
        **({} if g.gene_ids is None else {"gene_ids": [str(x) for x in g.gene_ids]}),
        "features": torch.from_numpy(np.ascontiguousarray(g.features)),
        "indptr": torch.from_numpy(adj.indptr.astype(np.int64)),
        "indices": torch.from_numpy(adj.indices.astype(np.int64)),
        "n_genes": int(g.n_genes),
    }


def _graph_from_payload(p: dict[str, Any]) -> GraphData:
    n = int(p["n_genes"])
    indices = p["indices"].numpy()
    adj = sparse.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, p["indptr"].numpy()), shape=(n, n))
    return GraphData(
        name=p["name"],
        omics=p["omics"],
        tissue=p["tissue"],
        species=p["species"],
        genes=np.asarray(p["genes"], dtype=object),
        features=p["features"].numpy(),
        adjacency=adj,
        gene_ids=None if p.get("gene_ids") is None else np.asarray(p["gene_ids"], dtype=object),
    )


def _h5_safe(obj):
    """A copy of ``obj`` that h5ad can store (no ``None``; tuples as lists)."""
    if isinstance(obj, dict):
        return {str(k): _h5_safe(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list | tuple):
        return [_h5_safe(v) for v in obj if v is not None]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj
