"""Programs the lab and the benchmark need that a fresh machine may lack (PgBouncer, wrk): found on
the machine, else fetched from Debian's archive with ``apt-get download`` and unpacked with
``dpkg-deb -x`` into the project's venv. No root needed; nothing is installed on the system."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

#: Where fetched packages are unpacked, one folder per program: inside the venv, so ``make clean`` removes them.
TOOLS_ROOT = Path(__file__).resolve().parents[2] / ".venv"


class FetchError(RuntimeError):
    """The program is missing and could not be fetched; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Program:
    """A runnable program: ``command`` plus the environment it needs (an unpacked one needs its
    libraries on ``LD_LIBRARY_PATH``), and where it came from."""

    command: tuple[str, ...]
    env: dict[str, str]
    source: str

    @property
    def path(self) -> Path:
        return Path(self.command[0])


def unpacked(root: Path, binary: str) -> Program | None:
    """The program ``binary`` (a path such as ``usr/sbin/pgbouncer``) unpacked under ``root``, or None."""
    path = root / binary
    if not path.exists():
        return None
    libdirs = sorted(str(p) for p in (root / "usr" / "lib").glob("*-linux-gnu"))
    return Program((str(path),), {"LD_LIBRARY_PATH": os.pathsep.join(libdirs)}, f"Debian package, unpacked in {root}")


def fetch(root: Path, packages: Sequence[str], binary: str, name: str, variable: str) -> Program:
    """Download ``packages`` with ``apt-get download`` and unpack them into ``root``; the
    :class:`Program` at ``binary`` in them."""
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        raise FetchError(
            f"{name} is not installed and this machine has no apt-get to fetch it: install {name}, or set {variable} to its path"
        )
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"healthz-{name}-debs-") as debs:
        result = subprocess.run(
            ["apt-get", "download", *packages], cwd=debs, capture_output=True, text=True, timeout=300
        )
        if result.returncode != 0:
            raise FetchError(
                f"apt-get download {' '.join(packages)} failed: {result.stderr.strip()[-500:]}; install {name}, or set {variable}"
            )
        for deb in sorted(Path(debs).glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, capture_output=True, timeout=120)
    found = unpacked(root, binary)
    if found is None:
        raise FetchError(f"the {name} package unpacked into {root} holds no {binary}")
    return found


def find(name: str, *, variable: str, packages: Sequence[str], binary: str, root: Path | None = None) -> Program:
    """``name`` from ``$variable``, else ``PATH`` (and ``/usr/sbin``), else one fetched earlier
    into ``root`` (default ``.venv/<name>``), else :func:`fetch`."""
    root = root or TOOLS_ROOT / name
    explicit = os.environ.get(variable)
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise FetchError(f"{variable}={explicit} is not an executable file")
        return Program((explicit,), {}, variable)
    on_path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if on_path:
        return Program((on_path,), {}, "PATH")
    return unpacked(root, binary) or fetch(root, packages, binary, name, variable)
