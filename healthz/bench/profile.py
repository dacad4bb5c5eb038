"""Where a worker spends its CPU on the health check: py-spy samples one gunicorn worker of a bench
case under wrk, and each sample is charged to the library of its innermost frame that one of
:data:`LIBRARIES` names (healthz, SQLAlchemy, Flask, the green hub...).

    python -m healthz.bench.profile --worker-class eventlet --seconds 6

py-spy (``pip install py-spy``, in ``[dev]``) reads the worker's stacks from outside, so the
service runs unchanged; it needs to be allowed to trace the worker (our own child: allowed unless
``kernel.yama.ptrace_scope`` is 2 or more).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

#: ``(frame text to look for, library)``, most specific first: a sample is charged to the first
#: library whose text appears in its innermost matching frame.
LIBRARIES = (
    ("prometheus_client", "prometheus_client"),
    ("healthz/gate.py", "healthz (first-come gate)"),
    ("healthz/", "healthz"),
    ("psycopg2", "psycopg2"),
    ("psycopg/", "psycopg"),
    ("sqlalchemy", "SQLAlchemy"),
    ("flask", "Flask"),
    ("werkzeug", "Werkzeug"),
    ("gunicorn/http", "gunicorn (HTTP parsing)"),
    ("gunicorn", "gunicorn"),
    ("eventlet", "eventlet (hub, green sockets)"),
    ("gevent", "gevent (hub, green sockets)"),
    ("greenlet", "greenlet"),
)


def library(frames: list[str]) -> str:
    """The library charged for a sample whose stack is ``frames`` (outermost first)."""
    for frame in reversed(frames):
        for text, name in LIBRARIES:
            if text in frame:
                return name
    return "other (interpreter, standard library)"


def by_library(raw: Iterable[str]) -> dict[str, float]:
    """Shares of samples by library from py-spy's raw (collapsed) output: ``frame;frame;... count``
    lines. Ordered from the largest share; empty when there is no sample."""
    counts: Counter[str] = Counter()
    for line in raw:
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            counts[library(stack.split(";"))] += int(count)
    total = sum(counts.values())
    return {name: n / total for name, n in counts.most_common()} if total else {}


def profile(worker_class: str, seconds: float, connections: int, output: Path) -> tuple[dict[str, float], float]:
    """The sized pool's case under ``worker_class``, one worker, wrk on healthz for ``seconds``
    while py-spy samples the worker: ``(shares by library, req/s)``."""
    from healthz.config import Settings
    from healthz.db import seed
    from healthz.postgres import PostgreSQL, free_port
    from healthz.service import Gunicorn

    from . import cases, wrk

    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("healthz.bench.profile needs py-spy: pip install py-spy (in healthz[dev])")
    case = cases.make_case(worker_class, cases.SIZED)
    output.mkdir(parents=True, exist_ok=True)
    raw = output / f"{case.name}.txt"
    with PostgreSQL(max_connections=100) as pg:
        seed(Settings.from_mapping({"database_url": pg.local_url()}), 10)
        env = {**case.scenario.environment(pg.url, every_setting=True), "GUNICORN_WORKERS": "1"}
        with Gunicorn(case.worker_class, env, output / f"{case.name}.log", port=free_port()) as service:
            load, url = wrk.find(), service.base_url + "/api/v1/healthz/"
            load.run(url, connections=connections, seconds=1, timeout=5, reconnect_every=100)  # warm-up
            command = [spy, "record", "-p", str(service.worker_pids()[0]), "-d", f"{seconds:g}", "-r", "250"]
            sampler = subprocess.Popen(
                [*command, "-f", "raw", "-o", str(raw), "--nonblocking"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            time.sleep(0.5)  # py-spy attaches before the load it samples
            result = load.run(url, connections=connections, seconds=max(1, round(seconds - 1)), timeout=5)
            _, err = sampler.communicate(timeout=seconds + 30)
            if sampler.returncode != 0 or not raw.exists():
                raise SystemExit(f"py-spy failed: {err.decode(errors='replace').strip()[-300:]}")
    return by_library(raw.read_text().splitlines()), result.rps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m healthz.bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker-class", default="eventlet", choices=("eventlet", "gevent", "gthread", "sync"))
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--output", type=Path, default=Path("bench-results") / "profile")
    args = parser.parse_args(argv)
    shares, rps = profile(args.worker_class, args.seconds, args.connections, args.output)
    print(f"{args.worker_class} sized pool, 1 worker, wrk {args.connections} connections: {rps:,.0f} req/s")
    print("CPU samples of the worker by library (innermost frame):")
    for name, share in shares.items():
        print(f"  {share:6.1%}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
