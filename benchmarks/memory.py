"""Resident-memory readings for benchmarks (Linux /proc), shared by the benchmark scripts."""

from __future__ import annotations

from pathlib import Path


def status_mb(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM, ...) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> float:
    """Reset the kernel's peak-RSS mark (clear_refs 5) so VmHWM measures only what follows; return VmRSS in MB."""
    Path("/proc/self/clear_refs").write_text("5")
    return status_mb("VmRSS")
