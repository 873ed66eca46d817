"""Resident-memory readings shared by the benchmark scripts (Linux ``/proc``; no imports beyond the standard library)."""

from __future__ import annotations

from pathlib import Path


def rss_gb(field: str = "VmRSS") -> float:
    """A memory field of ``/proc/self/status`` in GB: ``VmRSS`` (now) or ``VmHWM`` (peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (Linux ``clear_refs``), so that the peak is that of what follows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True
