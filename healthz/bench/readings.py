"""What the bench reads off a run and how it sums repeated runs: the endpoint it loads, a worker's
resident memory, and a figure over repeats with its median and spread (the noise)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import wrk

#: The health check every case loads.
HEALTHZ = "/api/v1/healthz/"


def series(values: Iterable[float]) -> dict[str, Any]:
    """``values`` with their median, min, max and spread ((max - min) / median): the noise."""
    values = [float(v) for v in values]
    median = statistics.median(values)
    return {
        "median": median,
        "min": min(values),
        "max": max(values),
        "spread": (max(values) - min(values)) / median if median else 0.0,
        "runs": values,
    }


def rss_mib(pid: int) -> float | None:
    """Resident memory of ``pid`` in MiB (``VmRSS``), or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def runs_summary(runs: list[wrk.WrkResult]) -> dict[str, Any]:
    return {
        "rps": series(r.rps for r in runs),
        "p50_ms": series(r.p50_ms for r in runs),
        "p99_ms": series(r.p99_ms for r in runs),
        "requests": sum(r.requests for r in runs),
        "failed": sum(r.failed for r in runs),
        "errors": {kind: sum(r.errors[kind] for r in runs) for kind in runs[0].errors},
    }
