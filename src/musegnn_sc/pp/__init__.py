"""Preprocessing: gene selection, CS-CORE co-expression graphs, gene activity (no torch here)."""

from ._cscore import CSCoreResult, cscore
from ._gene_activity import gene_activity
from ._graph import build_coexpression_graph, build_coexpression_graphs
from ._orthologs import map_orthologs
from ._svg import spatially_variable_genes

__all__ = [
    "CSCoreResult",
    "build_coexpression_graph",
    "build_coexpression_graphs",
    "cscore",
    "gene_activity",
    "map_orthologs",
    "spatially_variable_genes",
]
