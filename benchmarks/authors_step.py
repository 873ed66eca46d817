"""The authors' MuSe-GNN architecture and training step, re-implemented from their description, as a timing baseline.

``bench_training.py`` runs this next to ``musegnn_sc`` on the same graphs, in the same session, so that speed and
memory ratios are measured side by side on the same (shared, noisy) machine rather than against figures taken on
another day. It follows the facts about the authors' code in ``../shared/reference/reference_implementation.md``
(sections 1.2 and 1.3); none of their code is used:

- ``L_i``: PyG ``TransformerConv(n_cells_i -> 32, heads=4)`` on each gene's expression profile over all cells,
  ``GraphNorm(128)``, ``Mish(inplace=True)``; one shared block (a single technique x tissue label):
  ``TransformerConv(128 -> 32, heads=2)``, ``GraphNorm(64)``, Mish, ``TransformerConv(64 -> 32, heads=1)``, plus a
  ``TransformerConv(128 -> 32, heads=1)`` residual branch. Edge-wise message passing over the stored edges, diagonal
  included.
- Decoder per dataset: ``Linear(n, n) -> Mish -> Linear(n, n) -> Mish -> Linear(n, n)`` on ``z z^T``;
  ``BCEWithLogitsLoss`` on the flattened dense adjacency.
- Per step (graphs in fixed order, one step per graph): encode ``i``, reconstruct, draw a partner ``j`` uniformly from
  the others and encode it with gradients; ``-(cos * lambda).mean()`` over common genes; InfoNCE with
  pytorch-metric-learning's ``SelfSupervisedLoss(NTXentLoss(temperature=0.07))`` on 100 different genes drawn with
  replacement per graph and one neighbour per different gene drawn once; weight 0.01; three Adam optimisers (1e-4,
  1e-4, 1e-3).

Without pytorch-metric-learning (``pip install musegnn_sc[benchmark]``) the InfoNCE falls back to the equal-valued
dense form of ``musegnn_sc``, which is about 1 s per step faster than the library: the result says which ran.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from torch import nn


class _Encoder(nn.Module):
    def __init__(self, n_cells: int, dim: int = 32):
        from torch_geometric.nn import GraphNorm, TransformerConv

        super().__init__()
        self.conv = TransformerConv(n_cells, dim, heads=4)
        self.norm = GraphNorm(4 * dim)
        self.act = nn.Mish(inplace=True)

    def forward(self, x, edge_index):
        return self.act(self.norm(self.conv(x, edge_index)))


class _Shared(nn.Module):
    def __init__(self, dim: int = 32):
        from torch_geometric.nn import GraphNorm, TransformerConv

        super().__init__()
        self.conv1 = TransformerConv(4 * dim, dim, heads=2)
        self.norm = GraphNorm(2 * dim)
        self.act = nn.Mish(inplace=True)
        self.conv2 = TransformerConv(2 * dim, dim, heads=1)
        self.residual = TransformerConv(4 * dim, dim, heads=1)

    def forward(self, h, edge_index):
        main = self.conv2(self.act(self.norm(self.conv1(h, edge_index))), edge_index)
        return main + self.residual(h, edge_index)


def _decoder(n: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(n, n), nn.Mish(inplace=True), nn.Linear(n, n), nn.Mish(inplace=True), nn.Linear(n, n)
    )


def _infonce():
    try:
        from pytorch_metric_learning.losses import NTXentLoss, SelfSupervisedLoss
    except ImportError:
        from musegnn_sc.model._losses import info_nce

        return (lambda a, p: info_nce(a, p, temperature=0.07, symmetric=True)), "dense (musegnn_sc)"
    return SelfSupervisedLoss(NTXentLoss(temperature=0.07)), "pytorch-metric-learning"


def _one_neighbour(rng: np.random.Generator, adj: sparse.csr_matrix, gene: int) -> int:
    """A neighbour drawn uniformly (the gene itself among them, via the diagonal), or the gene if it has none."""
    nbrs = adj.indices[adj.indptr[gene] : adj.indptr[gene + 1]]
    return int(rng.choice(nbrs)) if len(nbrs) else gene


def train_authors_step(
    profiles: list[np.ndarray],
    adjacencies: list[sparse.csr_matrix],
    genes: list[np.ndarray],
    epochs: int,
    on_epoch=None,
    seed: int = 0,
) -> dict:
    """Train ``epochs`` epochs of the authors' step and return seconds per epoch and loss figures.

    Parameters
    ----------
    profiles
        Per dataset, the ``n_genes x n_cells`` expression profile of its graph genes (the authors' node features).
    adjacencies
        Per dataset, the binary adjacency (diagonal included), rows and columns in ``genes`` order.
    genes
        Per dataset, the gene names.
    on_epoch
        Called after each epoch with the epoch's index (to sample memory, for instance).
    """
    from musegnn_sc.model._pairs import PairCache

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n_graphs = len(profiles)
    xs = [torch.from_numpy(np.ascontiguousarray(p, dtype=np.float32)) for p in profiles]
    edges, targets, neighbours = [], [], []
    for adj in adjacencies:
        coo = sparse.coo_matrix(adj)
        edges.append(torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64)))
        targets.append(torch.from_numpy(adj.toarray().astype(np.float32)))
        neighbours.append(adj.tocsr())
    specific = nn.ModuleList(_Encoder(x.shape[1]) for x in xs)
    shared = _Shared()
    decoders = nn.ModuleList(_decoder(x.shape[0]) for x in xs)
    optimisers = [
        torch.optim.Adam(specific.parameters(), lr=1e-4),
        torch.optim.Adam(shared.parameters(), lr=1e-4),
        torch.optim.Adam(decoders.parameters(), lr=1e-3),
    ]
    # the precomputation (not timed): common genes and Jaccard weights, different genes with one neighbour drawn once
    cache = PairCache(genes, adjacencies)
    pairs = {}
    for i in range(n_graphs):
        for j in range(n_graphs):
            if i != j:
                p = cache(i, j)
                nbr_i = np.array([_one_neighbour(rng, neighbours[i], g) for g in p.diff_i], dtype=np.int64)
                nbr_j = np.array([_one_neighbour(rng, neighbours[j], g) for g in p.diff_j], dtype=np.int64)
                pairs[i, j] = (p, nbr_i, nbr_j)
    loss_func, infonce_kind = _infonce()
    bce_func = nn.BCEWithLogitsLoss()

    def encode(k):
        return shared(specific[k](xs[k], edges[k]), edges[k])

    times, bce_hist = [], []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        bces = []
        for i in range(n_graphs):
            z_i = encode(i)
            bce = bce_func(decoders[i](z_i @ z_i.T).flatten(), targets[i].flatten())
            loss = bce
            if n_graphs > 1:
                j = int(rng.choice([k for k in range(n_graphs) if k != i]))
                z_j = encode(j)
                p, nbr_i, nbr_j = pairs[i, j]
                if p.n_common:
                    cos = F.cosine_similarity(z_i[p.common_i], z_j[p.common_j])
                    loss = loss - (cos * torch.from_numpy(p.weights)).mean()
                m = min(len(p.diff_i), len(p.diff_j))
                if m:
                    idx = rng.choice(m, min(100, m))
                    anchors = torch.cat([z_i[p.diff_i[idx]], z_j[p.diff_j[idx]]])
                    positives = torch.cat([z_i[nbr_i[idx]], z_j[nbr_j[idx]]])
                    loss = loss + 0.01 * loss_func(anchors, positives)
            for opt in optimisers:
                opt.zero_grad()
            loss.backward()
            for opt in optimisers:
                opt.step()
            bces.append(float(bce.detach()))
        times.append(time.perf_counter() - t0)
        bce_hist.append(float(np.mean(bces)))
        if on_epoch is not None:
            on_epoch(epoch)
    n_params = sum(p.numel() for m in (specific, shared, decoders) for p in m.parameters())
    return {"epoch_s": times, "bce": bce_hist, "parameters": int(n_params), "infonce": infonce_kind}
