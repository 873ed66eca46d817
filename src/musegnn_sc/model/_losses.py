"""The three loss terms of MuSe-GNN (paper section 3.4-3.7)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Reduction = Literal["sum", "mean"]
#: Anchors of ``L_InfoNCE``: genes absent from the partner only (paper), or the common genes as well.
ContrastiveAnchors = Literal["different", "all"]


def reconstruction_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``L_BCE`` (paper eq. 4): binary cross-entropy of the decoder's logits against the adjacency, every entry.

    The mean over all ``n_genes**2`` entries, diagonal included, as ``BCEWithLogitsLoss`` in the reference; the logit
    form is the numerically stable equivalent of the paper's sigmoid + BCE.
    """
    return F.binary_cross_entropy_with_logits(logits, target)


def similarity_loss(
    z_i: torch.Tensor,
    z_j: torch.Tensor,
    common_i: torch.Tensor,
    common_j: torch.Tensor,
    weights: torch.Tensor,
    *,
    reduction: Reduction = "sum",
) -> torch.Tensor:
    """``L_Sim`` (paper section 3.5): minus the Jaccard-weighted cosine similarity of the common genes.

    ``-sum_g lambda_ijg cos(z_i[g], z_j[g])`` with ``reduction='sum'`` (the paper's text: "multiplying this vector with
    cosine similarities and then summing"), or the mean over common genes with ``reduction='mean'`` (the authors'
    code). Zero when the graphs share no gene.
    """
    if common_i.numel() == 0:
        return z_i.new_zeros(())
    cos = F.cosine_similarity(z_i[common_i], z_j[common_j], dim=1, eps=1e-8)
    weighted = cos * weights
    if reduction == "sum":
        return -weighted.sum()
    if reduction == "mean":
        return -weighted.mean()
    msg = f"`sim_reduction` must be 'sum' or 'mean', got {reduction!r}."
    raise ValueError(msg)


def info_nce(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    *,
    temperature: float = 0.07,
    symmetric: bool = False,
) -> torch.Tensor:
    """``L_InfoNCE`` (paper eq. 6) on cosine similarities, as one dense cross-entropy.

    Row ``k`` of ``anchors`` is a query whose positive key is row ``k`` of ``positives``; every other key is a
    negative. With ``symmetric=False`` (the paper's eq. 6 and pytorch-metric-learning < 2.2's ``SelfSupervisedLoss``)
    the logits are the ``N x N`` cosine matrix of queries against keys. With ``symmetric=True`` (the NT-Xent of
    pytorch-metric-learning >= 2.2 that the authors' code now calls) queries and keys are pooled into ``2N`` items,
    each item's positive is its partner and all other items except itself are negatives. Both equal the library's
    values but cost one ``N x N`` (or ``2N x 2N``) matrix product instead of per-pair tensors.
    """
    n = anchors.shape[0]
    if n == 0:
        return anchors.new_zeros(())
    a = F.normalize(anchors, dim=1, eps=1e-8)
    p = F.normalize(positives, dim=1, eps=1e-8)
    if not symmetric:
        logits = a @ p.T / temperature
        target = torch.arange(n, device=anchors.device)
        return F.cross_entropy(logits, target)
    emb = torch.cat([a, p], dim=0)
    logits = emb @ emb.T / temperature
    eye = torch.eye(2 * n, dtype=torch.bool, device=anchors.device)
    logits = logits.masked_fill(eye, float("-inf"))
    target = (torch.arange(2 * n, device=anchors.device) + n) % (2 * n)
    return F.cross_entropy(logits, target)
