"""The MuSe-GNN model (imports torch and torch-geometric)."""

from ._model import MuSeGNN

__all__ = ["MuSeGNN"]
