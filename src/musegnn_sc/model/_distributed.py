"""Dataset-parallel training on several processes (GPUs or CPU processes): each rank owns some datasets.

Lightning's DDP wraps the whole model in :class:`torch.nn.parallel.DistributedDataParallel`, which all-reduces the
gradient of every parameter at every step: for MuSe-GNN that is every dataset's decoder (3 M parameters per
1,000-gene dataset) although a step uses two datasets' layers, and every rank keeps and updates every decoder. Here
instead:

- the graphs of an epoch are dealt out in turn (graph ``k`` of the epoch's list to rank ``k mod world_size``), the same
  every epoch, so each dataset's decoder is trained on one rank, its *owner*, and nowhere else; ranks with fewer
  graphs run empty steps so that every rank takes the same number of steps;
- after each backward pass only the gradients of the shared blocks and of the dataset-specific encoders some rank used
  in this step (its graph and its partner: at most ``2 world_size`` of them, 66 k parameters each) are averaged across
  ranks, in one all-reduce of a flat buffer; decoder gradients stay on their rank (divided by ``world_size``, as
  DDP's average would leave them). Every rank then applies the same Adam updates to the same encoders and shared
  blocks, so those stay identical across ranks, and the decoders a rank does not own are never touched: with
  ``offload=True`` their pages are never read, so each rank's resident memory holds the decoders of its own steps;
- when training ends, each decoder is broadcast from its owner, so every rank (and ``ddp_spawn``'s main process)
  ends with the whole trained model.

The traffic per step is that of the shared blocks and a few encoders (about 1 MB for 2 ranks) instead of the whole
model (1 GB per step for 82 datasets).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import Dataset

if TYPE_CHECKING:
    from ._training import MuSeGNNTrainingPlan

#: Item of a rank's step list that stands for "no graph": the rank runs an empty step to keep in step with the others.
EMPTY_STEP = -1


def _rank_and_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class RankSteps(Dataset):
    """The graph indices a rank steps on in an epoch: items ``rank, rank + world_size, ...`` of ``steps``.

    The rank and world size are read when the data are first used (after the process group exists); a single process
    gets every item in order. Ranks with fewer items are padded with :data:`EMPTY_STEP`.
    """

    def __init__(self, steps: list[int]):
        self.steps = [int(s) for s in steps]

    def _mine(self) -> list[int]:
        rank, world = _rank_and_size()
        per_rank = math.ceil(len(self.steps) / world)
        mine = self.steps[rank::world]
        return mine + [EMPTY_STEP] * (per_rank - len(mine))

    def __len__(self) -> int:
        return len(self._mine())

    def __getitem__(self, idx: int) -> int:
        return self._mine()[idx]

    def owners(self, world: int) -> dict[int, int]:
        """Rank that trains each graph of the list."""
        return {g: k % world for k, g in enumerate(self.steps)}


class DatasetParallelStrategy(DDPStrategy):
    """DDP without the model-wide all-reduce: see the module docstring (:mod:`musegnn_sc.model._distributed`).

    Accepts the arguments of :class:`lightning.pytorch.strategies.DDPStrategy` (``start_method``, ``timeout``...).
    """

    strategy_name = "musegnn_ddp"

    def configure_ddp(self) -> None:
        """Keep the module unwrapped; make every rank start from rank 0's encoders and shared blocks."""
        plan = self.lightning_module
        with torch.no_grad():
            for p in _replicated_parameters(plan.module):
                dist.broadcast(p.data, src=0)

    def sync_gradients(self, plan: MuSeGNNTrainingPlan) -> None:
        """Average the gradients of the shared blocks and encoders any rank used; scale the decoders'; share NaNs.

        Each rank sends which encoders and shared blocks its step used (none for an empty step or a step whose loss
        was not finite: their zero losses only keep the ranks in step) and the graph of a non-finite loss. Only the
        blocks some rank used are averaged; the others get no gradient on any rank, so Adam leaves them alone, as in
        one process. A non-finite loss on any rank stops every rank after this step, together.
        """
        module = plan.module
        world = self.world_size
        step_used = plan.step_used_blocks()
        n_shared = len(module.shared)
        mine = torch.full((3 + n_shared,), -1, dtype=torch.long, device=plan.device)
        if step_used is not None:
            encoders, shared = step_used
            mine[: len(encoders)] = torch.tensor(encoders, dtype=torch.long, device=plan.device)
            for k in shared:
                mine[3 + k] = 1
        if plan.nan_graph is not None:
            mine[2] = plan.nan_graph
        gathered = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(gathered, mine)
        union = sorted({int(k) for t in gathered for k in t[:2].tolist() if k >= 0})
        shared_union = sorted({k for t in gathered for k in range(n_shared) if int(t[3 + k]) > 0})
        nan_graphs = [int(t[2]) for t in gathered if int(t[2]) >= 0]
        if nan_graphs:
            plan.stop_on_nan(nan_graphs[0])
        reduced = [p for k in union for p in module.encoders[k].parameters()]
        reduced += [p for k in shared_union for p in module.shared[k].parameters()]
        reduced = [p for p in reduced if p.requires_grad]
        keep = {id(p) for p in reduced}
        for p in _replicated_parameters(module):
            if id(p) not in keep:
                p.grad = None  # no rank used it in this step (an empty step's zero loss may have touched it)
        if reduced:
            flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in reduced])
            dist.all_reduce(flat)
            flat /= world
            offset = 0
            for p in reduced:
                n = p.numel()
                p.grad = flat[offset : offset + n].view_as(p).clone()
                offset += n
        for p in module.decoder_parameters():
            if p.grad is not None:
                p.grad /= world

    def gather_decoders(self, plan: MuSeGNNTrainingPlan, owners: dict[int, int]) -> None:
        """Give every rank each decoder as its owner trained it (one broadcast per decoder)."""
        module = plan.module
        arena = module.arena
        with torch.no_grad():
            for k, dec in enumerate(module.decoders):
                params = [p for p in dec.parameters() if p.requires_grad]
                if not params or k not in owners:
                    continue
                for p in params:
                    dist.broadcast(p.data, src=owners[k])
                if arena is not None:
                    arena.release(params)


def _replicated_parameters(module) -> list[torch.nn.Parameter]:
    """The parameters every rank holds identically: dataset-specific encoders and shared blocks."""
    return [*module.encoders.parameters(), *module.shared.parameters()]


def dataset_parallel(strategy: Any) -> Any:
    """The strategy :meth:`MuSeGNN.train` runs for a ``strategy`` argument.

    Lightning's DDP names become :class:`DatasetParallelStrategy` with the same start method; anything else (a strategy
    object included) is passed to Lightning as it is.
    """
    methods = {"ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}
    if isinstance(strategy, str) and strategy in methods:
        return DatasetParallelStrategy(start_method=methods[strategy])
    return strategy


def is_dataset_parallel(trainer) -> bool:
    """Whether ``trainer`` runs :class:`DatasetParallelStrategy` on more than one process."""
    strategy = getattr(trainer, "strategy", None)
    return isinstance(strategy, DatasetParallelStrategy) and strategy.world_size > 1


__all__ = ["EMPTY_STEP", "DatasetParallelStrategy", "RankSteps", "dataset_parallel", "is_dataset_parallel"]
