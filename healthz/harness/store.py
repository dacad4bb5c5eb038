"""Where a run's results go: a folder of its own, never an earlier run's, and JSON written whole.

:func:`new_folder` names a fresh ``<root>/<UTC timestamp>`` folder (``-2``, ``-3``... when two runs
start within the same second); :func:`refuse_taken` refuses a folder that already holds a run's results;
:func:`write_json` writes through a temporary file and a rename, so a reader (or a run cut off
half-way) never sees half a file; :func:`machine` is the one description of the host every result
carries.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path
from typing import Any


class StoreError(RuntimeError):
    """A results folder cannot be used; the message says which and why."""


def new_folder(root: Path) -> Path:
    """``root/<UTC timestamp>``, or with ``-2``, ``-3``... appended: a folder that does not exist yet."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder, n = root / stamp, 1
    while folder.exists():
        n += 1
        folder = root / f"{stamp}-{n}"
    return folder


def refuse_taken(folder: Path, results: str) -> None:
    """:class:`StoreError` when ``folder`` cannot take a new run whose results file is ``results``: it
    already holds one (an earlier run's results are never overwritten) or is not a folder. Nothing
    is created, so a run refused later leaves no folder behind."""
    if folder.exists() and not folder.is_dir():
        raise StoreError(f"--output {folder}: not a folder")
    if (folder / results).exists():
        raise StoreError(f"--output {folder} already holds {results} from an earlier run: choose another folder")


def write_json(path: Path, data: Any, indent: int = 1) -> None:
    """``data`` as JSON in ``path``, replacing it whole (a temporary file beside it, then a rename);
    values JSON has no type for are written as their ``str``."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=indent, default=str) + "\n")
    tmp.replace(path)


def machine() -> dict[str, Any]:
    """This host as every result describes it: name, cores, CPU model, memory, platform, kernel,
    Python and load average. ``cpus`` repeats ``cores`` for results read by earlier reports."""
    cpu = None
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        memory = None
    try:
        loadavg = list(os.getloadavg())
    except OSError:
        loadavg = None
    return {
        "host": platform.node(),
        "cores": os.cpu_count(),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": memory,
        "platform": platform.platform(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": loadavg,
    }
