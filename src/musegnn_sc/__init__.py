"""MuSe-GNN for scverse: gene embeddings learned across single-cell datasets, tissues, omics and species."""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

from . import datasets, io, pl, pp, tl

try:
    __version__ = version("musegnn-sc")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
    __version__ = "0+unknown"

__all__ = ["datasets", "io", "model", "pl", "pp", "tl", "__version__"]


def __getattr__(name: str):
    # `model` imports torch and PyG (seconds): load it on first use so `import musegnn_sc` stays light.
    if name == "model":
        return import_module(f"{__name__}.model")
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
