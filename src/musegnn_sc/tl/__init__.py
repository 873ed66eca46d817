"""Tools: training MuSe-GNN and analysing gene embeddings (torch is imported only when training)."""

from ._coherence import gene_set_coherence
from ._diffcoexp import differential_coexpression
from ._enrichment import enrichment
from ._evaluate import evaluate, score_methods
from ._function import predict_gene_function
from ._genes import aggregate_genes, similar_genes
from ._modules import gene_modules
from ._orthology import orthology_score
from ._pairs import predict_gene_pairs
from ._train import train_musegnn

__all__ = [
    "aggregate_genes",
    "differential_coexpression",
    "enrichment",
    "evaluate",
    "gene_modules",
    "gene_set_coherence",
    "orthology_score",
    "predict_gene_function",
    "predict_gene_pairs",
    "score_methods",
    "similar_genes",
    "train_musegnn",
]
