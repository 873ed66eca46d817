"""Tools: training MuSe-GNN and analysing gene embeddings (torch is imported only when training)."""

from ._coherence import gene_set_coherence
from ._diffcoexp import differential_coexpression
from ._differential_modules import differential_module_activity
from ._enrichment import enrichment
from ._evaluate import evaluate, score_methods
from ._function import predict_gene_function
from ._genes import aggregate_genes, similar_genes
from ._hub_genes import hub_genes
from ._map import map_to_reference
from ._module_traits import module_trait_correlation
from ._modules import gene_modules
from ._orthology import orthology_score
from ._pairs import predict_gene_pairs
from ._score_modules import score_modules
from ._spatial_modules import spatial_modules
from ._train import train_musegnn

__all__ = [
    "aggregate_genes",
    "differential_coexpression",
    "differential_module_activity",
    "enrichment",
    "evaluate",
    "gene_modules",
    "gene_set_coherence",
    "hub_genes",
    "module_trait_correlation",
    "map_to_reference",
    "orthology_score",
    "predict_gene_function",
    "predict_gene_pairs",
    "score_methods",
    "score_modules",
    "similar_genes",
    "spatial_modules",
    "train_musegnn",
]
