"""Tools: training MuSe-GNN and analysing gene embeddings (torch is imported only when training)."""

from ._diffcoexp import differential_coexpression
from ._enrichment import enrichment
from ._genes import aggregate_genes, similar_genes
from ._modules import gene_modules
from ._orthology import orthology_score
from ._train import train_musegnn

__all__ = [
    "aggregate_genes",
    "differential_coexpression",
    "enrichment",
    "gene_modules",
    "orthology_score",
    "similar_genes",
    "train_musegnn",
]
