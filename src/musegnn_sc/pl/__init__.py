"""Plotting, scanpy-style: ``show``, ``save`` and ``ax`` arguments; the axes are returned when not shown."""

from ._coexpression import coexpression
from ._embedding import embedding
from ._enrichment import enrichment
from ._loss import loss_history
from ._metrics import metrics
from ._sankey import sankey

__all__ = ["coexpression", "embedding", "enrichment", "loss_history", "metrics", "sankey"]
