"""Package logger, whose level follows scanpy's verbosity.

The standard :mod:`logging` module, as scvi-tools does, with scanpy's settings: once scanpy is imported,
``sc.settings.verbosity`` decides what ``musegnn_sc`` logs, as it does for scanpy's own functions (0 or
``'error'``: errors only, 1 or ``'warning'``: the default, 2 or ``'info'``: what each function stored and how long it
took, 3 or ``'hint'`` and above: also hints and debug messages). A level set explicitly,
``logging.getLogger("musegnn_sc").setLevel("INFO")``, takes precedence over scanpy's verbosity. scanpy is never
imported here (importing it only for its settings would cost seconds): if it is not imported, nobody can have set
its verbosity, and the level is ``WARNING``.
"""

from __future__ import annotations

import logging
import sys
import time

#: Logging level of each of scanpy's verbosity levels (``scanpy.settings.verbosity``): scanpy's ``hint`` is 15.
SCANPY_LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: 15}


def scanpy_level() -> int | None:
    """The logging level scanpy's verbosity asks for, or ``None`` if scanpy is not imported."""
    sc = sys.modules.get("scanpy")
    settings = getattr(sc, "settings", None)
    if settings is None:
        return None
    try:
        verbosity = int(settings.verbosity)  # a `scanpy.Verbosity` IntEnum
    except (AttributeError, TypeError, ValueError):  # pragma: no cover - a scanpy without `settings.verbosity`
        return None
    if verbosity >= 4:
        return logging.DEBUG
    return SCANPY_LEVELS[max(verbosity, 0)]


class _ScanpyVerbosityLogger(logging.Logger):
    """A logger whose level, unless set explicitly, is read from ``scanpy.settings.verbosity`` at every call."""

    def getEffectiveLevel(self) -> int:
        if self.level != logging.NOTSET:
            return self.level
        level = scanpy_level()
        return logging.WARNING if level is None else level

    def isEnabledFor(self, level: int) -> bool:
        # no cache: scanpy's verbosity can change between two calls without logging knowing
        if self.manager.disable >= level:
            return False
        return level >= self.getEffectiveLevel()


class _StderrHandler(logging.StreamHandler):
    """A :class:`logging.StreamHandler` that writes to ``sys.stderr`` as it is when each message is emitted.

    A plain ``StreamHandler()`` keeps the ``sys.stderr`` of the moment it was created (package import), so a stderr
    replaced later (``contextlib.redirect_stderr``, pytest's ``capsys``, a notebook kernel's) never sees the
    messages. Like :data:`logging.lastResort`, this one looks ``sys.stderr`` up at every message.
    """

    def __init__(self, level: int = logging.NOTSET):
        logging.Handler.__init__(self, level)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # ``StreamHandler.setStream``: the stream is always the current stderr
        pass


logger = logging.getLogger("musegnn_sc")
if not isinstance(logger, _ScanpyVerbosityLogger):
    logger.__class__ = _ScanpyVerbosityLogger
if not logger.handlers:
    _handler = _StderrHandler()
    _handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logger.addHandler(_handler)
    logger.propagate = False


def start(msg: str) -> float:
    """Log the start of a computation and return a timestamp for :func:`finish`."""
    logger.info(msg)
    return time.perf_counter()


def finish(msg: str, t0: float) -> None:
    """Log the end of a computation started at ``t0``."""
    logger.info("    finished (%.2fs): %s", time.perf_counter() - t0, msg)
