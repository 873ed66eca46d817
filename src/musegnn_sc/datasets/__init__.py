"""Simulated datasets with planted, known structure, for tests, tutorials and the demo."""

from ._simulate import toy_atac_peaks, toy_mudata
from ._toy_gdata import toy_gdata
from ._toy_modules import toy_module_gdata

__all__ = ["toy_atac_peaks", "toy_gdata", "toy_module_gdata", "toy_mudata"]
