"""An independent check of the lab on a Django project: ``ab -n 4000 -c 100`` (not locust) against
the project's own gunicorn in a 1,000-port network namespace, and PostgreSQL's own counters (not the
lab's probes) read before, during and after, for CONN_MAX_AGE=0 and 600 under eventlet and 600 under
gthread. Root, iproute2 and ``ab`` (apache2-utils) needed.

    sudo .venv/bin/python examples/django-report/independent_check.py --venv VENV --project DIR

``DIR`` is a Django project in the report's shape: ``myapp.wsgi:application``, the report's
``myapp/settings/gunicorn.conf.py`` (``GUNICORN_PORT``, ``WORKER_CLASS``, ``WORKERS``, ``THREADS``),
``DATABASES`` from ``POSTGRES_*`` and ``CONN_MAX_AGE``; ``VENV`` is the venv with its packages.
Compare with ``healthz lab run --scenarios-file mine.toml -t netns -c 100 --max-requests 4000``.

``--as-is`` runs the project with its own settings alone: the team's project unchanged, then a copy
with the change the lab's ``--try-fixes`` answered pasted in, as the team would paste it.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import time

from sqlalchemy.engine import make_url

from healthz.lab.topology import Netns
from healthz.postgres import PostgreSQL

SETTINGS = {
    "eventlet, CONN_MAX_AGE=0": {"CONN_MAX_AGE": "0", "WORKER_CLASS": "eventlet"},
    "eventlet, CONN_MAX_AGE=600": {"CONN_MAX_AGE": "600", "WORKER_CLASS": "eventlet"},
    "gthread 8 threads, CONN_MAX_AGE=600": {"CONN_MAX_AGE": "600", "WORKER_CLASS": "gthread", "THREADS": "8"},
}


def _one(pg: PostgreSQL, query: str, database: str) -> int:
    with pg.connect() as conn, conn.cursor() as cur:
        cur.execute(query, (database,))
        return int(cur.fetchone()[0])


def _sessions(pg: PostgreSQL, database: str) -> int:
    time.sleep(1.5)  # backends report their session to the counter as they exit
    return _one(pg, "SELECT sessions FROM pg_stat_database WHERE datname = %s", database)


def _time_wait(namespace: str, port: int) -> int:
    out = subprocess.run(
        ["ip", "netns", "exec", namespace, "ss", "-tanH", "state", "time-wait", "dport", "=", f":{port}"],
        capture_output=True,
        text=True,
    ).stdout
    return len(out.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument(
        "--as-is",
        action="store_true",
        help="run the project with its own settings only (a copy with a change pasted in is checked the same way)",
    )
    args = parser.parse_args()
    configurations = {"as it is": {}} if args.as_is else SETTINGS
    bin_dir = os.path.join(args.venv, "bin")
    with (
        Netns(ports=1000, tag="check") as net,
        PostgreSQL(max_connections=4096, host=net.db_host, command_prefix=net.db_prefix) as pg,
    ):
        url = make_url(pg.create_database("theirs"))
        env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "POSTGRES_HOST": url.host,
            "POSTGRES_PORT": str(url.port),
            "POSTGRES_DB": url.database,
            "POSTGRES_USER": url.username,
            "POSTGRES_PASSWORD": url.password,
            "GUNICORN_PORT": "8000",
            "WORKERS": "2",
        }
        subprocess.run(
            [*net.app_prefix, "python", "manage.py", "migrate", "-v", "0"], cwd=args.project, env=env, check=True
        )
        for label, settings in configurations.items():
            net.renew_app()
            gunicorn = subprocess.Popen(
                [*net.app_prefix, "gunicorn", "myapp.wsgi:application", "-c", "myapp/settings/gunicorn.conf.py"],
                cwd=args.project,
                env={**env, **settings},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                time.sleep(4)
                before = _sessions(pg, "theirs")
                ab = subprocess.Popen(
                    [*net.client_prefix, "ab", "-q", "-s", "10", "-n", str(args.requests), "-c", str(args.concurrency)]
                    + [f"http://{net.service_host}:8000/api/v1/healthz/"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                backends = time_wait = 0
                while ab.poll() is None:
                    time_wait = max(time_wait, _time_wait(net.app_ns, url.port))
                    query = (
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend'"
                    )
                    backends = max(backends, _one(pg, query, "theirs"))
                    time.sleep(0.2)
                out = ab.stdout.read()
            finally:
                os.killpg(gunicorn.pid, signal.SIGINT)
                gunicorn.wait(30)
            after = _sessions(pg, "theirs")
            non_2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
            complete = re.search(r"Complete requests:\s+(\d+)", out)
            print(
                f"{label}: {complete.group(1) if complete else '?'} requests, {non_2xx.group(1) if non_2xx else 0} "
                f"non-2xx, {after - before} sessions, peak backends {backends}, peak TIME_WAIT {time_wait}",
                flush=True,
            )


if __name__ == "__main__":
    main()
