"""The MuSe-GNN benchmark: the paper's baselines and a runner that scores every method with the six metrics.

Separate from :mod:`musegnn_sc.tl` because the baselines need torch (imported when a neural baseline runs) and the
runner reads local data collections.
"""

from ._baselines import BASELINES, run_baseline
from ._runner import METHODS, BenchmarkResult, load_shared_collection, run_benchmark

__all__ = ["BASELINES", "METHODS", "BenchmarkResult", "load_shared_collection", "run_baseline", "run_benchmark"]
