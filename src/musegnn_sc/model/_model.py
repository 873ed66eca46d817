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


def _ddp_strategy(strategy):
    # Each step touches only one or two datasets' layers, so DDP must tolerate parameters without gradients.
    if isinstance(strategy, str) and strategy in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook"):
        return f"{strategy}_find_unused_parameters_true"
    return strategy


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
    ):
        setup = mdata.uns.get(SETUP_KEY)
        if setup is None:
            logg.logger.info("MuData not registered: calling `MuSeGNN.setup_mudata(mdata)` with its defaults.")
            self.setup_mudata(mdata)
            setup = mdata.uns[SETUP_KEY]
        setup = _setup_from_uns(setup)
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
        self._build(graphs, setup, init)

    # ------------------------------------------------------------------ construction
    def _build(self, graphs: list[GraphData], setup: dict[str, Any], init: dict[str, Any]) -> None:
        import torch

        from ._module import MuSeGNNModule, graph_tensors, use_dense

        if init["n_latent"] < 1 or init["heads_dataset"] < 1 or init["heads_shared"] < 1:
            msg = "`n_latent`, `heads_dataset` and `heads_shared` must be positive integers."
            raise ValueError(msg)
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
            )
        self.module.eval()
        self.history_: list[dict[str, float]] = []
        self.is_trained_ = False
        self.train_params_: dict[str, Any] = {}
        self._pairs = None

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
        if features not in ("graph", "expression"):
            msg = f"`features` must be 'graph' or 'expression', got {features!r}."
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

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_epochs: int = 300,
        *,
        lr_encoder: float = 1e-4,
        lr_decoder: float = 1e-3,
        lambda_sim: float = 1.0,
        lambda_contrastive: float = 1.0,
        temperature: float = 0.07,
        n_contrastive: int = 100,
        sim_reduction: Literal["sum", "mean"] = "mean",
        contrastive_anchors: Literal["different", "all"] = "all",
        symmetric_infonce: bool = False,
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
        tuned on (``benchmarks/validate_defaults.py``): the authors' mean ``L_Sim`` and an InfoNCE that also
        contrasts the genes the two datasets share; the paper's text is
        ``sim_reduction='sum', lambda_contrastive=0.01, contrastive_anchors='different'``. Calling :meth:`train` again continues from the current
        weights (with a new optimiser) and appends to :attr:`history`.

        Parameters
        ----------
        max_epochs
            Number of epochs (the authors train 2,000; on the toy data 200-300 suffice). With ``resume=True``, the
            total including the epochs of the checkpoint.
        lr_encoder
            Adam learning rate of ``L_i`` and ``D_m`` (paper: 1e-4).
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
        early_stopping
            Stop when the epoch's mean total loss has not improved by ``early_stopping_min_delta`` for
            ``early_stopping_patience`` epochs.
        early_stopping_patience, early_stopping_min_delta
            See ``early_stopping``.
        accelerator, devices, strategy
            Passed to :class:`lightning.pytorch.Trainer`: ``accelerator='gpu', devices=4, strategy='ddp'`` trains on 4
            GPUs (``'ddp'`` and ``'ddp_spawn'`` are run with ``find_unused_parameters=True``, since a step uses the
            layers of two datasets only). The graphs of an epoch are split between processes.
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
        from ._pairs import PairCache, neighbour_lists
        from ._training import GraphIndexDataset, LossConfig, MuSeGNNTrainingPlan, collate_single

        if sim_reduction not in ("sum", "mean"):
            msg = f"`sim_reduction` must be 'sum' or 'mean', got {sim_reduction!r}."
            raise ValueError(msg)
        if contrastive_anchors not in ("different", "all"):
            msg = f"`contrastive_anchors` must be 'different' or 'all', got {contrastive_anchors!r}."
            raise ValueError(msg)
        if max_epochs < 1:
            msg = f"`max_epochs` must be at least 1, got {max_epochs}."
            raise ValueError(msg)
        if resume and checkpoint_dir is None:
            msg = "`resume=True` needs the `checkpoint_dir` of the run to continue."
            raise ValueError(msg)
        config = LossConfig(
            lambda_sim=float(lambda_sim),
            lambda_contrastive=float(lambda_contrastive),
            temperature=float(temperature),
            n_contrastive=int(n_contrastive),
            sim_reduction=sim_reduction,
            contrastive_anchors=contrastive_anchors,
            symmetric_infonce=bool(symmetric_infonce),
            lr_encoder=float(lr_encoder),
            lr_decoder=float(lr_decoder),
            seed=int(seed),
        )
        self._check_anchors()
        if self._pairs is None:
            self._pairs = PairCache([g.genes for g in self.graphs], [g.adjacency for g in self.graphs])
        neighbours = [neighbour_lists(g.adjacency) for g in self.graphs]
        plan = MuSeGNNTrainingPlan(self.module, self._tensors, self._pairs, neighbours, config, self.history_)
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
        loader = DataLoader(GraphIndexDataset(len(self.graphs)), batch_size=1, shuffle=False, collate_fn=collate_single)
        kwargs = {
            "max_epochs": max_epochs,
            "accelerator": accelerator,
            "devices": devices,
            "strategy": _ddp_strategy(strategy),
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
        self.train_params_ = {
            "max_epochs": int(max_epochs),
            **dict(config.__dict__.items()),
            "early_stopping": bool(early_stopping),
        }
        t0 = logg.start(f"training MuSe-GNN on {len(self.graphs)} graph(s) for up to {max_epochs} epochs")
        in_main = threading.current_thread() is threading.main_thread()
        prev_sigint = signal.getsignal(signal.SIGINT) if in_main else None
        interrupted = False
        self.module.train()
        with _quiet_lightning(progress_bar):
            trainer = pl.Trainer(**kwargs)
            try:
                trainer.fit(plan, train_dataloaders=loader, ckpt_path=ckpt_path)
            except SystemExit:
                # Lightning answers Ctrl-C by tearing down and calling sys.exit(1); keep the model instead.
                if not trainer.interrupted:
                    raise
                interrupted = True
            except KeyboardInterrupt:
                interrupted = True
            finally:
                set_flush_denormal_all_threads(False)  # also after an interrupt (the plan sets it at the start)
                if in_main and prev_sigint is not None:
                    signal.signal(signal.SIGINT, prev_sigint)
        self.train_params_["world_size"] = int(trainer.world_size)
        self.module = plan.module.cpu()
        self.module.eval()
        self.history_ = [dict(r) for r in plan.history]
        self.is_trained_ = len(self.history_) > 0
        self._tensors = [g.to(torch.device("cpu")) for g in self._tensors]
        if interrupted:
            warnings.warn(
                f"Training interrupted after {len(self.history_)} complete epoch(s); the model keeps its current "
                "weights and history. Call `train()` again to continue.",
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
        if len(self.graphs) == 1:
            warnings.warn(
                f"Only one dataset ({self.graphs[0].name!r}): MuSe-GNN trains on the graph reconstruction loss alone "
                "(no partner graph for the similarity and contrastive losses).",
                UserWarning,
                stacklevel=3,
            )
            return
        all_genes = [set(g.genes) for g in self.graphs]
        for k, g in enumerate(self.graphs):
            others = set().union(*(s for n, s in enumerate(all_genes) if n != k))
            if not (all_genes[k] & others):
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

    def get_latent_representation(self) -> dict[str, np.ndarray]:
        """Embedding of each dataset's genes, ``{dataset: n_genes x n_latent}``, in graph-node order."""
        import torch

        self.module.eval()
        device = next(self.module.parameters()).device
        out = {}
        with torch.no_grad():
            for i, g in enumerate(self.graphs):
                z = self.module.encode(i, self._tensors[i].to(device))
                out[g.name] = z.cpu().numpy().astype(np.float32)
        return out

    def get_gene_embeddings(self) -> AnnData:
        """Gene-level AnnData with one row per (dataset, gene).

        Returns
        -------
        AnnData with index ``'<dataset>:<gene>'``; ``obs`` columns ``gene``, ``dataset``, ``omics``, ``tissue``,
        ``species`` and ``is_common`` (the gene is in the graph of every dataset); the embedding in
        ``obsm['X_musegnn']`` (and in ``X``, so that scanpy functions work on it directly); the model parameters and
        the loss history in ``uns['musegnn']``.
        """
        from anndata import AnnData

        emb = self.get_latent_representation()
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
        return gdata

    # ------------------------------------------------------------------ persistence
    def save(self, dir_path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Save the model to ``dir_path/model.pt`` (weights, parameters, history and the graphs).

        The directory is written to a temporary sibling first and renamed into place, so an interrupted save never
        leaves a half-written model. The graphs are stored too, so :meth:`load` works without the MuData.

        Parameters
        ----------
        dir_path
            Directory to create.
        overwrite
            Replace an existing directory.
        """
        import torch

        path = Path(dir_path)
        if path.exists() and not overwrite:
            msg = f"{path} already exists. Pass `overwrite=True` to replace it, or choose another directory."
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
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            torch.save(payload, tmp / MODEL_FILE)
            if path.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
                os.replace(path, old / path.name)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def load(cls, dir_path: str | os.PathLike, mdata: MuData | None = None) -> MuSeGNN:
        """Load a model saved with :meth:`save`.

        Parameters
        ----------
        dir_path
            Directory written by :meth:`save`.
        mdata
            Optional MuData to attach: its graphs (read with the saved :meth:`setup_mudata` arguments) must have the
            saved genes. Without it, the graphs stored with the model are used. Either way the embeddings are those
            of the saved model, bit for bit.
        """
        import torch

        file = Path(dir_path) / MODEL_FILE
        if not file.exists():
            msg = f"No saved model at {file}. Pass the directory given to `MuSeGNN.save`."
            raise FileNotFoundError(msg)
        payload = torch.load(file, map_location="cpu", weights_only=True)
        if payload.get("format") != _FORMAT:
            msg = f"{file} has format {payload.get('format')!r}; this version reads format {_FORMAT}."
            raise ValueError(msg)
        saved = [_graph_from_payload(p) for p in payload["graphs"]]
        if mdata is None:
            graphs = saved
        else:
            graphs = read_graphs(mdata, **payload["setup_args"])
            for g, s in zip(graphs, saved, strict=True):
                if g.name != s.name or not np.array_equal(g.genes, s.genes):
                    msg = (
                        f"Dataset {s.name!r} of the saved model does not match modality {g.name!r} of the MuData "
                        "(different names or genes). Load without `mdata`, or pass the MuData the model was "
                        "trained on."
                    )
                    raise ValueError(msg)
        model = cls.__new__(cls)
        model._build(graphs, payload["setup_args"], payload["init_params"])
        model.module.load_state_dict(payload["state_dict"])
        model.module.eval()
        model.history_ = [dict(r) for r in payload["history"]]
        model.is_trained_ = bool(payload["is_trained"])
        model.train_params_ = dict(payload["train_params"])
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
        for g, dense in zip(self.graphs, self._dense, strict=True):
            lines.append(
                f"  - {g.name}: {g.omics}, {g.tissue}, {g.species}; {g.n_genes} genes, {g.n_edges:,} edges "
                f"(density {g.density:.2f}, {'dense' if dense else 'sparse'} attention), {g.features.shape[1]} features"
            )
        return "\n".join(lines)


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
