"""Simulated datasets with planted, known structure, for tests, tutorials and the demo."""

from ._simulate import toy_atac_peaks, toy_mudata

__all__ = ["toy_atac_peaks", "toy_mudata"]
