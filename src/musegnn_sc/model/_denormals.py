"""Flush float denormals to zero in every thread torch computes on, for the duration of training.

Saturated activations (a sharp attention softmax, Mish or sigmoid far in their tails) produce numbers below float32's
smallest normal value. x86 CPUs process such denormal numbers in microcode: a 1,000 x 1,000 matrix product with
denormal inputs takes 2 s instead of 17 ms on the build machine, and an epoch of MuSe-GNN becomes several times
slower as soon as a few appear. Their values are irrelevant to training, so they are flushed to zero.

:func:`torch.set_flush_denormal` sets the flag of the calling thread only, and torch's intra-op OpenMP threads,
created at the first parallel operation, keep theirs. The flag is therefore also set inside a parallel region of the
OpenMP runtime torch loaded (``GOMP_parallel``, which GNU libgomp and LLVM libomp both provide), whose team is
torch's pool. Where that runtime cannot be found the flag is set in the calling thread only.
"""

from __future__ import annotations

import ctypes
import os

import torch

_OPENMP_NAMES = ("libgomp", "libomp", "libiomp")


def _openmp_runtime() -> ctypes.CDLL | None:
    """The OpenMP runtime loaded in this process (Linux), or ``None``."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if any(n in line for n in _OPENMP_NAMES)})
    except OSError:
        return None
    # Other packages bundle their own OpenMP runtime (scikit-learn's libgomp, for one): torch's comes first.
    torch_dir = os.path.dirname(os.path.realpath(torch.__file__))
    paths.sort(key=lambda p: not os.path.realpath(p).startswith(torch_dir))
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
            lib.GOMP_parallel  # noqa: B018  (raises AttributeError if absent)
        except (OSError, AttributeError):
            continue
        return lib
    return None


_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def set_flush_denormal_all_threads(enabled: bool) -> bool:
    """Set flush-to-zero in this thread and in torch's OpenMP threads; whether the worker threads were reached."""
    torch.set_flush_denormal(enabled)
    n_threads = torch.get_num_threads()
    if n_threads <= 1:
        return True
    lib = _openmp_runtime()
    if lib is None:
        return False

    @_CALLBACK
    def body(_):
        torch.set_flush_denormal(enabled)

    try:
        lib.GOMP_parallel.argtypes = [_CALLBACK, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        lib.GOMP_parallel.restype = None
        lib.GOMP_parallel(body, None, n_threads, 0)
    except (OSError, AttributeError, ctypes.ArgumentError):  # pragma: no cover - depends on the platform
        return False
    return True
