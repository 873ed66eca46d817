"""Simulated datasets with planted, known structure (tests, tutorials, the demo), and the real public data folder."""

from ._shared import shared_data
from ._simulate import toy_atac_peaks, toy_mudata
from ._toy_gdata import toy_gdata
from ._toy_modules import toy_module_gdata

__all__ = ["shared_data", "toy_atac_peaks", "toy_gdata", "toy_module_gdata", "toy_mudata"]
