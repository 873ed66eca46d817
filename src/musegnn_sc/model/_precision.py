"""Whether a device computes bfloat16 matrix products natively (``decoder_precision='auto'``)."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

#: CPU flags (Linux ``/proc/cpuinfo``) of native bfloat16 matrix arithmetic: Intel AMX tiles, AVX-512 BF16.
_NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware (faster than float32 there).

    On a CPU without such instructions bfloat16 products are emulated and slower than float32, so ``'auto'`` keeps
    float32 there (and on every CPU whose flags cannot be read).
    """
    if device.type == "cuda":
        # compute capability 8 (Ampere) and later multiply bfloat16 in hardware; `is_bf16_supported()` also says
        # yes where bfloat16 is only emulated (Volta, Turing) and looks at the current device, not this one
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        return any(flag in _cpu_flags() for flag in _NATIVE_BF16_FLAGS)
    return False


def resolve_decoder_precision(precision: str, device: torch.device) -> str:
    """``'float32'`` or ``'bfloat16'`` for the option value ``precision`` on ``device``."""
    if precision == "auto":
        return "bfloat16" if native_bfloat16(device) else "float32"
    return precision
