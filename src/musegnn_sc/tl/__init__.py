"""Tools: training MuSe-GNN and analysing gene embeddings (torch is imported only when training)."""

from ._genes import aggregate_genes, similar_genes
from ._train import train_musegnn

__all__ = ["aggregate_genes", "similar_genes", "train_musegnn"]
