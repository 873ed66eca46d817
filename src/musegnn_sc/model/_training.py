"""Lightning training plan of MuSe-GNN: Algorithm 1 of the paper, one optimiser step per graph.

Each training "batch" is the index ``i`` of one graph. The step encodes graph ``i``, reconstructs its adjacency
(``L_BCE``), samples a partner ``j`` uniformly from the other graphs, encodes it with gradients (as the reference), and
adds ``L_Sim`` on their common genes and ``lambda_c L_InfoNCE`` on their different genes (and, with
``contrastive_anchors='all'``, on their common genes too, each gene's copy in the partner being its positive). Every random draw of a step
(partner, InfoNCE anchors and their neighbours) comes from a generator seeded by ``(seed, epoch, i)``, so a run is
reproducible, a resumed run draws what an uninterrupted one would have drawn, and DDP ranks need no shared state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from ._denormals import set_flush_denormal_all_threads
from ._distributed import EMPTY_STEP, RankSteps, is_dataset_parallel
from ._losses import ContrastiveAnchors, Reduction, info_nce, reconstruction_loss, similarity_loss
from ._module import GraphTensors, MuSeGNNModule
from ._offload import FileArena, arena_floats
from ._pairs import PairCache, sample_common, sample_contrastive
from ._precision import resolve_decoder_precision

#: Graphs whose attention masks an offloaded (memory-bounded) model keeps while training.
_OFFLOAD_GRAPH_CACHE = 8

#: Names of the loss terms recorded in the history, in order.
LOSS_TERMS = ("loss", "bce", "sim", "infonce")


@dataclass
class LossConfig:
    """Weights and options of the loss terms (see :meth:`musegnn_sc.model.MuSeGNN.train`)."""

    lambda_sim: float = 1.0
    lambda_contrastive: float = 1.0
    temperature: float = 0.07
    n_contrastive: int = 100
    sim_reduction: Reduction = "mean"
    contrastive_anchors: ContrastiveAnchors = "all"
    symmetric_infonce: bool = False
    lr_encoder: float = 3e-3
    lr_decoder: float = 1e-3
    seed: int = 0
    reconstruction_fraction: float = 0.25
    decoder_precision: str = "float32"


def collate_single(batch: list[int]) -> torch.Tensor:
    """Batches hold one graph index."""
    return torch.tensor(batch[0], dtype=torch.long)


class MuSeGNNTrainingPlan(pl.LightningModule):
    """LightningModule training a :class:`~._module.MuSeGNNModule` on a list of graphs.

    Parameters
    ----------
    module
        The networks.
    graphs
        Tensors of every graph (on the CPU; moved to the training device on first use).
    pairs
        Index sets of graph pairs.
    neighbours
        ``(indptr, indices)`` of each graph's neighbour lists without self-loops.
    config
        Loss weights, learning rates, seed.
    history
        Rows of the loss history already recorded (training continues after them).
    steps
        The graphs the epochs step on, in order (their owners under dataset-parallel training).
    """

    def __init__(
        self,
        module: MuSeGNNModule,
        graphs: list[GraphTensors],
        pairs: PairCache,
        neighbours: list[tuple[np.ndarray, np.ndarray]],
        config: LossConfig,
        history: list[dict[str, float]] | None = None,
        steps: RankSteps | None = None,
    ):
        super().__init__()
        self.steps = steps
        self.module = module
        self.graphs = graphs
        self.pairs = pairs
        self.neighbours = neighbours
        self.config = config
        self.history: list[dict[str, float]] = list(history or [])
        self.epoch_offset = len(self.history)
        self.nan_event: tuple[int, int] | None = None
        #: graph of this step's non-finite loss (``None``: finite), and whether the step trained a graph at all
        self.nan_graph: int | None = None
        self._real_step = False
        self._device_graphs: dict[int, GraphTensors] = {}
        self._sums = torch.zeros(len(LOSS_TERMS) + 1)
        self._snapshot: dict[str, torch.Tensor] | None = None
        self._snapshot_rows = len(self.history)
        self._saved_decoders: dict[torch.nn.Parameter, torch.Tensor] = {}
        self._snapshot_slots: dict[torch.nn.Parameter, torch.Tensor] = {}
        self._snapshot_arena: FileArena | None = None
        self._moments: FileArena | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self._moment_slots: dict[torch.nn.Parameter, tuple[torch.Tensor, torch.Tensor]] = {}
        self._stepped: list[torch.nn.Parameter] = []

    # state carried in checkpoints and across ddp_spawn (it travels inside the state dict)
    def get_extra_state(self) -> Any:
        """History and epoch offset, stored with the weights."""
        return {"history": [dict(r) for r in self.history], "epoch_offset": int(self.epoch_offset)}

    def set_extra_state(self, state: Any) -> None:
        """Restore what :meth:`get_extra_state` stored."""
        self.history = [dict(r) for r in state["history"]]
        self.epoch_offset = int(state["epoch_offset"])

    @property
    def global_epoch(self) -> int:
        """Epoch counted over every training run of the model."""
        return self.epoch_offset + self.current_epoch

    def configure_optimizers(self):
        """Adam at the encoder and decoder learning rates of :class:`LossConfig`, no weight decay."""
        return self._adam(
            [(self.module.encoder_parameters(), self.config.lr_encoder),
             (self.module.decoder_parameters(), self.config.lr_decoder)]
        )  # fmt: skip

    def _adam(self, groups: list[tuple[list[torch.nn.Parameter], float]]) -> torch.optim.Adam:
        """Adam on the trainable parameters of ``(parameters, learning rate)`` groups.

        The fused implementation updates each parameter in one kernel, without the intermediate tensor lists of the
        ``foreach`` one (torch >= 2.4 on CPU). With offloaded decoders, their two moments are placed in a file-backed
        arena of their own (zero-filled, as Adam's lazy initialisation would make them), so they are resident only
        while their dataset trains.
        """
        param_groups = [{"params": [p for p in params if p.requires_grad], "lr": lr} for params, lr in groups]
        optimizer = torch.optim.Adam([g for g in param_groups if g["params"]], fused=True)
        self._optimizer = optimizer
        arena = self.module.arena
        if arena is not None:
            offloaded = [p for g in optimizer.param_groups for p in g["params"] if arena.owns(p)]
            self._moments = FileArena(
                arena_floats(p.numel() for p in offloaded for _ in range(2)),
                arena.directory,
                what="decoders' Adam moments",
            )
            for p in offloaded:
                optimizer.state[p] = {
                    "step": torch.zeros((), dtype=torch.float32),
                    "exp_avg": self._moments.tensor(p.shape),
                    "exp_avg_sq": self._moments.tensor(p.shape),
                }
                self._moment_slots[p] = (optimizer.state[p]["exp_avg"], optimizer.state[p]["exp_avg_sq"])
        return optimizer

    def _moments_back_to_file(self) -> None:
        """Put the offloaded decoders' Adam moments that a resumed checkpoint restored in memory back into the file.

        Loading a checkpoint replaces the optimiser's state by in-memory tensors; copied into their file-backed slots,
        the moments are resident again only while their dataset trains.
        """
        if self._optimizer is None or self._moments is None:
            return
        state = self._optimizer.state
        for p, slots in self._moment_slots.items():
            st = state.get(p)
            if not st:
                continue
            for key, slot in zip(("exp_avg", "exp_avg_sq"), slots, strict=True):
                loaded = st.get(key)
                if loaded is not None and loaded is not slot:
                    self._moments.write(slot, loaded)
                    st[key] = slot
            self._moments.release(slots)

    def _graph(self, i: int) -> GraphTensors:
        g = self._device_graphs.get(i)
        if g is None or g.x.device != self.device:
            g = self.graphs[i].to(self.device)
            if g.dense:
                g.bias = g.attention_bias()  # built once per training run (offloaded models: kept for a few graphs)
            self._device_graphs[i] = g
            if self.module.offloaded and len(self._device_graphs) > _OFFLOAD_GRAPH_CACHE:
                # a memory-bounded model keeps the attention masks of the most recently used graphs only
                del self._device_graphs[next(iter(self._device_graphs))]
        else:
            self._device_graphs[i] = self._device_graphs.pop(i)  # most recently used last
        return g

    def encode_partner(self, j: int) -> torch.Tensor:
        """Embedding of the partner graph ``j`` of a step (with gradients; a query model caches frozen ones)."""
        return self.module.encode(j, self._graph(j))

    def step_losses(self, i: int, epoch: int) -> dict[str, torch.Tensor]:
        """The loss terms of the step for graph ``i`` at ``epoch`` (Algorithm 1, lines 4-11)."""
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, epoch, i])
        self._prefetch_decoder(i)
        g_i = self._graph(i)
        z_i = self.module.encode(i, g_i)
        rows = self._reconstruction_rows(i, epoch, g_i.n)
        dtype = torch.bfloat16 if cfg.decoder_precision == "bfloat16" else None
        bce = reconstruction_loss(self.module.decode(i, z_i, rows, dtype), g_i.target(rows))
        zero = bce.new_zeros(())
        sim, nce = zero, zero
        n_graphs = len(self.graphs)
        if n_graphs > 1 and (cfg.lambda_sim != 0 or cfg.lambda_contrastive != 0):
            j = int(rng.integers(n_graphs - 1))
            j += j >= i
            pair = self.pairs(i, j)
            z_j = self.encode_partner(j)
            dev = self.device
            if cfg.lambda_sim != 0 and pair.n_common:
                sim = similarity_loss(
                    z_i,
                    z_j,
                    torch.from_numpy(pair.common_i).to(dev, torch.long),
                    torch.from_numpy(pair.common_j).to(dev, torch.long),
                    torch.from_numpy(pair.weights).to(dev),
                    reduction=cfg.sim_reduction,
                )
            if cfg.lambda_contrastive != 0:
                a_i, p_i = sample_contrastive(rng, pair.diff_i, *self.neighbours[i], cfg.n_contrastive)
                a_j, p_j = sample_contrastive(rng, pair.diff_j, *self.neighbours[j], cfg.n_contrastive)
                parts = [(z_i, a_i, z_i, p_i), (z_j, a_j, z_j, p_j)]
                if cfg.contrastive_anchors == "all":
                    # each common gene's copy in the partner is its positive; every other gene is a negative
                    c_i, c_j = sample_common(rng, pair.common_i, pair.common_j, cfg.n_contrastive)
                    parts.append((z_i, c_i, z_j, c_j))
                if sum(len(p[1]) for p in parts) > 1:
                    anchors = torch.cat([za[torch.from_numpy(a).to(dev)] for za, a, _, _ in parts])
                    positives = torch.cat([zp[torch.from_numpy(p).to(dev)] for _, _, zp, p in parts])
                    nce = info_nce(anchors, positives, temperature=cfg.temperature, symmetric=cfg.symmetric_infonce)
        loss = bce + cfg.lambda_sim * sim + cfg.lambda_contrastive * nce
        return {"loss": loss, "bce": bce, "sim": sim, "infonce": nce}

    def _reconstruction_rows(self, i: int, epoch: int, n: int) -> torch.Tensor | None:
        """Source genes whose adjacency rows ``L_BCE`` reconstructs at this step (``None``: all of them).

        A uniform sample without replacement of ``reconstruction_fraction`` of the genes, drawn from a generator of
        its own (seeded by ``(seed, epoch, i)``), so the other draws of the step do not depend on the fraction.
        """
        k = math.ceil(self.config.reconstruction_fraction * n)
        if k >= n:
            return None
        rng = np.random.default_rng([self.config.seed, epoch, i, 1])
        return torch.from_numpy(np.sort(rng.choice(n, size=max(k, 1), replace=False))).to(self.device)

    def training_step(self, batch: torch.Tensor, batch_idx: int):
        """One optimiser step on graph ``batch``."""
        i = int(batch)
        self.nan_graph, self._real_step = None, False
        if i == EMPTY_STEP:
            # a rank with fewer graphs than the others: a zero loss keeps it in the ranks' collective calls
            return self._zero_loss()
        terms = self.step_losses(i, self.global_epoch)
        loss = terms["loss"]
        if not torch.isfinite(loss):
            self.nan_graph = i
            self.stop_on_nan(i)
            # A zero loss keeps DDP ranks in step (they all run a backward pass); the weights are restored afterwards.
            return self._zero_loss()
        self._real_step = True
        vals = torch.stack([terms[k].detach() for k in LOSS_TERMS]).cpu()
        self._sums[: len(LOSS_TERMS)] += vals
        self._sums[-1] += 1
        self.log_dict(
            {k: float(v) for k, v in zip(LOSS_TERMS[1:], vals[1:], strict=True)},
            prog_bar=True,
            on_step=True,
            on_epoch=False,
            batch_size=1,
        )
        return loss

    def _zero_loss(self) -> torch.Tensor:
        """A zero loss with a graph: the backward pass of a step that trains nothing (empty or non-finite steps).

        Built on a trainable encoder or shared parameter (a frozen query model's shared blocks have no gradient),
        never on an offloaded decoder, whose pages it would read in.
        """
        m = self.module
        for p in (*m.encoders.parameters(), *m.shared.parameters(), *m.decoder_parameters()):
            if p.requires_grad:
                return (p.reshape(-1)[:1] * 0.0).sum()
        msg = "MuSeGNN: no parameter of the model is trainable (internal error)."
        raise RuntimeError(msg)

    def stop_on_nan(self, graph: int) -> None:
        """Record the first non-finite loss and stop training after this step (weights restored at the end)."""
        if self.nan_event is None:
            self.nan_event = (self.global_epoch, int(graph))
        self.trainer.should_stop = True

    def step_used_blocks(self) -> tuple[list[int], list[int]] | None:
        """Encoders and shared blocks this step's loss used (those with gradients).

        ``None`` for a step that trained nothing (an empty or non-finite step, whose zero loss only keeps the ranks in
        step).
        """
        if not self._real_step:
            return None
        m = self.module
        encoders = [k for k, enc in enumerate(m.encoders) if any(p.grad is not None for p in enc.parameters())]
        if len(encoders) > 2:
            msg = (
                f"A step used {len(encoders)} dataset-specific encoders; MuSe-GNN steps use at most 2 (internal error)."
            )
            raise RuntimeError(msg)
        shared = [k for k, blk in enumerate(m.shared) if any(p.grad is not None for p in blk.parameters())]
        return encoders, shared

    def _take_snapshot(self) -> None:
        """Keep the current weights with the number of history rows they belong to.

        Encoders and shared blocks, which most steps change, are copied at once. A decoder changes only at the step of
        its own graph, so it is copied on write instead: :meth:`on_before_optimizer_step` saves it just before its
        first update after the snapshot (into a file-backed arena when the decoders are offloaded). The snapshot is
        then the copies, plus the decoders not updated since, which still hold the snapshot's values.
        """
        decoders = {id(p) for p in self.module.decoder_parameters()}
        state = self.module.state_dict(keep_vars=True)
        self._snapshot = {k: v.detach().clone() for k, v in state.items() if id(v) not in decoders}
        if self._snapshot_arena is not None:
            self._snapshot_arena.release(self._saved_decoders.values())
        self._saved_decoders = {}
        self._snapshot_rows = len(self.history)

    def on_after_backward(self) -> None:
        """Dataset-parallel training: average the gradients the ranks share (see :mod:`._distributed`)."""
        if is_dataset_parallel(self.trainer):
            self.trainer.strategy.sync_gradients(self)

    def on_before_optimizer_step(self, optimizer) -> None:
        """Save each decoder the coming update changes (it has a gradient), if not saved since the snapshot."""
        if self._snapshot is None:
            return
        arena = self.module.arena
        self._stepped = []
        for p in self.module.decoder_parameters():
            if p.grad is None:
                continue
            self._stepped.append(p)
            if p in self._saved_decoders:
                continue
            if arena is None:
                self._saved_decoders[p] = p.detach().clone()
                continue
            if self._snapshot_arena is None:
                self._snapshot_arena = FileArena(
                    arena_floats(q.numel() for q in self.module.decoder_parameters()),
                    arena.directory,
                    what="decoders' saved copies",
                )
            slot = self._snapshot_slots.get(p)
            if slot is None:
                slot = self._snapshot_slots[p] = self._snapshot_arena.tensor(p.shape)
            self._snapshot_arena.write(slot, p)  # through the file: the old copy is never read back
            self._saved_decoders[p] = slot

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        """Offloaded decoders: drop the pages of the decoder just trained (weights, moments, saved copy)."""
        arena = self.module.arena
        if arena is None or not self._stepped:
            return
        arena.release(self._stepped)
        state = self._optimizer.state if self._optimizer is not None else {}
        self._moments.release(
            t for p in self._stepped for k in ("exp_avg", "exp_avg_sq") if (t := state.get(p, {}).get(k)) is not None
        )
        if self._snapshot_arena is not None:
            self._snapshot_arena.release(self._saved_decoders[p] for p in self._stepped if p in self._saved_decoders)
        self._stepped = []
        # the next step's decoder is read in while this step's pages are written back and the next graphs encoded
        mine = self.steps._mine() if self.steps is not None else []
        if mine:
            following = mine[(batch_idx + 1) % len(mine)]
            if following != EMPTY_STEP:
                self._prefetch_decoder(following)

    def _prefetch_decoder(self, i: int) -> None:
        """Offloaded decoders: have the pages of decoder ``i`` (and its moments) read in while the encoders run."""
        arena = self.module.arena
        if arena is None:
            return
        params = list(self.module.decoders[i].parameters())
        arena.prefetch(params)
        if self._optimizer is not None:
            state = self._optimizer.state
            self._moments.prefetch(
                t for p in params for k in ("exp_avg", "exp_avg_sq") if (t := state.get(p, {}).get(k)) is not None
            )

    def on_train_start(self) -> None:
        """Keep the starting weights, resolve ``decoder_precision='auto'``, flush denormals (see :mod:`._denormals`)."""
        self.config.decoder_precision = resolve_decoder_precision(self.config.decoder_precision, self.device)
        self._moments_back_to_file()  # a resumed checkpoint's moments (restored before this hook) go to the file
        self._take_snapshot()
        if self.device.type == "cpu":
            set_flush_denormal_all_threads(True)

    def on_train_epoch_start(self) -> None:
        """Reset the epoch's loss sums."""
        self._sums = torch.zeros(len(LOSS_TERMS) + 1)

    def on_train_epoch_end(self) -> None:
        """Average the loss terms over the epoch's steps (and DDP ranks) into one history row."""
        sums = self.trainer.strategy.reduce(self._sums.to(self.device), reduce_op="sum")
        sums = sums.detach().cpu().double()
        if self.nan_event is not None or sums[-1] == 0:
            return
        row = {"epoch": float(self.global_epoch)}
        row.update({k: float(sums[n] / sums[-1]) for n, k in enumerate(LOSS_TERMS)})
        self.history.append(row)
        # the weights of the last complete epoch, to fall back on after a NaN loss, an interrupt or an exception
        self._take_snapshot()
        self.log("train_loss", row["loss"], on_step=False, on_epoch=True, prog_bar=False, batch_size=1)

    def on_train_end(self) -> None:
        """Fall back on the last good weights after a NaN loss; free the device copies of the graphs."""
        if self.nan_event is not None:
            self.restore_last_complete_epoch()
        if is_dataset_parallel(self.trainer) and self.steps is not None:
            self.trainer.strategy.gather_decoders(self, self.steps.owners(self.trainer.world_size))
        self._device_graphs.clear()
        self._release_training_state()
        set_flush_denormal_all_threads(False)

    def restore_last_complete_epoch(self) -> None:
        """Put back the weights of the last complete epoch and drop any history row recorded after them.

        Called after a NaN loss, and by :meth:`musegnn_sc.model.MuSeGNN.train` when training stops on an interrupt or
        an exception (Lightning does not call :meth:`on_train_end` then), so that weights and history always describe
        the same epochs. Without a snapshot (training stopped before its first step) nothing has moved.
        """
        if self._snapshot is not None:
            self.module.load_state_dict(self._snapshot, strict=False)  # the decoders: their saved copies below
            with torch.no_grad():
                for p, saved in self._saved_decoders.items():
                    p.copy_(saved)
            del self.history[self._snapshot_rows :]
        self._device_graphs.clear()
        self._release_training_state()

    def _release_training_state(self) -> None:
        """Drop the snapshot, the saved decoders and the references to the optimiser and its arenas."""
        self._snapshot = None
        self._saved_decoders = {}
        self._snapshot_slots = {}
        self._snapshot_arena = None
        self._moments = None
        self._moment_slots = {}
        if self._optimizer is not None:
            self._optimizer.state.clear()  # the moments' arena (an unlinked file) is freed with its last tensor
        self._optimizer = None
        self._stepped = []


def finite_history(history: list[dict[str, float]]) -> bool:
    """Whether every recorded loss is finite."""
    return all(math.isfinite(r[k]) for r in history for k in LOSS_TERMS)
