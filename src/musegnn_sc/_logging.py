"""Package logger.

The standard :mod:`logging` module, as scvi-tools does: ``logging.getLogger("musegnn_sc").setLevel("INFO")`` shows
what each function stored and how long it took. Importing scanpy only for its logger would cost seconds.
"""

from __future__ import annotations

import logging
import time

logger = logging.getLogger("musegnn_sc")
if not logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False


def start(msg: str) -> float:
    """Log the start of a computation and return a timestamp for :func:`finish`."""
    logger.info(msg)
    return time.perf_counter()


def finish(msg: str, t0: float) -> None:
    """Log the end of a computation started at ``t0``."""
    logger.info("    finished (%.2fs): %s", time.perf_counter() - t0, msg)
