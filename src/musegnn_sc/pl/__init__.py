"""Plotting, scanpy-style: ``show``, ``save`` and ``ax`` arguments; the axes are returned when not shown."""

from ._coexpression import coexpression
from ._embedding import embedding
from ._enrichment import enrichment
from ._loss import loss_history
from ._metrics import metrics
from ._module_network import module_network
from ._module_trait import module_trait
from ._sankey import sankey
from ._spatial_modules import spatial_modules

__all__ = [
    "coexpression",
    "embedding",
    "enrichment",
    "loss_history",
    "metrics",
    "module_network",
    "module_trait",
    "sankey",
    "spatial_modules",
]
