"""Settings to paste, in each framework's words: Flask's ``create_engine``, Django under gthread
with persistent connections, Django 5.1+'s own pool, Django through PgBouncer's Unix socket, the
gunicorn command and ``pgbouncer.ini``, each sized by the advice's :class:`~healthz.lab.advice.Sizing`
and resting on the measured run behind it (:class:`Backing`), or saying none was measured. Pure.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from healthz.lab import scenarios, verdict
from healthz.lab.figures import RunFigures, top

_n, _pct = verdict.number, verdict.percent

if TYPE_CHECKING:
    from healthz.lab.advice import Sizing


@dataclasses.dataclass(frozen=True)
class Snippet:
    """Settings for one framework or component, and the measured figure behind them."""

    title: str
    language: str
    code: str
    backed_by: str


def measured_line(name: str, runs: Sequence[RunFigures] | None, judged: verdict.Verdict | None) -> str:
    """A scenario's top step in one clause, with its outcome: the figure a setting rests on."""
    if not runs or judged is None:
        return f"{name}: not measured in this run"
    r = top(runs)
    if judged.outcome is verdict.Outcome.FAILED:
        outcome = f"FAILED ({judged.cause}, {_pct(judged.worst.error_rate if judged.worst else None)} failed)"
    else:
        outcome = f"{judged.outcome}, {_pct(r.error_rate)} failed"
    return (
        f"{name}: {outcome} at {r.concurrency:,} clients, {r.sessions_opened:,} sessions in {_n(r.seconds)} s, "
        f"{_n(r.rps)} req/s"
    )


@dataclasses.dataclass(frozen=True)
class Backing:
    """Finds the measured run behind a setting: the first of some scenarios that held, else the
    first that ran, else none (and says so)."""

    by_scenario: Mapping[str, list[RunFigures]]
    verdicts: Mapping[str, verdict.Verdict]

    def pick(self, *names: str) -> str | None:
        ran = [n for n in names if self.by_scenario.get(n)]
        held = [n for n in ran if self.verdicts[n].outcome is verdict.Outcome.HELD]
        return (held or ran or [None])[0]

    def line(self, *names: str) -> str:
        name = self.pick(*names)
        if name is None:
            return f"{' or '.join(names)}: not measured in this run"
        return measured_line(name, self.by_scenario[name], self.verdicts[name])

    def run(self, *names: str) -> RunFigures | None:
        name = self.pick(*names)
        return top(self.by_scenario[name]) if name else None


def _flask(sizing: Sizing, timeout: int, backed: str) -> Snippet:
    return Snippet(
        "Flask / SQLAlchemy",
        "python",
        "engine = create_engine(\n"
        "    DATABASE_URL,\n"
        f"    pool_size={sizing.pool_size},  # per worker process\n"
        "    max_overflow=0,  # overflow connections are closed on check-in: bursts churn\n"
        f"    pool_timeout={timeout},\n"
        ")",
        f"{sizing.line()}; {backed}",
    )


def _django_gthread(sizing: Sizing, backing: Backing) -> Snippet:
    d, names = sizing.plan.deployment, scenarios.DJANGO_GTHREAD
    measured = backing.run(*names)
    # A thread holds its connection for all of its request: the threads that held, not the pool by need.
    threads = (measured.worker_concurrency if measured else None) or max(sizing.pool_size, 4)
    return Snippet(
        "Django under gthread: persistent connections (one per thread)",
        "python",
        'DATABASES["default"].update(\n'
        "    CONN_MAX_AGE=600,  # keep each thread's connection; under eventlet it is closed with its greenlet\n"
        "    CONN_HEALTH_CHECKS=True,  # test a reused connection before the request uses it\n"
        ")\n"
        f"# gunicorn -k gthread --workers {d.workers} --threads {threads}: {d.workers * threads * d.hosts} connections at most"
        + proxy_lines(d.workers * threads),
        backing.line(*names),
    )


def _django_pool(sizing: Sizing, timeout: int, backing: Backing) -> Snippet:
    pool = sizing.pool_size
    return Snippet(
        "Django 5.1+ with psycopg 3: Django's own pool",
        "python",
        'DATABASES["default"].update(\n'
        "    CONN_MAX_AGE=0,  # Django refuses a pool with persistent connections\n"
        f'    OPTIONS={{"pool": {{"min_size": {min(pool, 2)}, "max_size": {pool}, "timeout": {timeout}}}}},\n'
        ")\n"
        "# pip install 'psycopg[binary,pool]'; gthread, or gevent (psycopg 3.1.14+ cooperates;\n"
        "# eventlet is unsupported)",
        backing.line(*scenarios.DJANGO_POOL),
    )


def _django_pgbouncer(backing: Backing) -> Snippet:
    return Snippet(
        "Django through PgBouncer on the application host, over its Unix socket",
        "python",
        'DATABASES["default"].update(\n'
        '    HOST="/var/run/postgresql",  # PgBouncer\'s unix_socket_dir: no TCP port per connection\n'
        '    PORT="6432",\n'
        "    CONN_MAX_AGE=600,  # under gthread: a login to PgBouncer per request is what it cannot keep up with\n"
        "    DISABLE_SERVER_SIDE_CURSORS=True,  # pool_mode = transaction\n"
        ")",
        f"{backing.line(scenarios.PGBOUNCER_KEPT)} (kept connections in front of PgBouncer); "
        f"{backing.line(scenarios.PGBOUNCER_UNIX)} (a login per request)",
    )


def _gunicorn(chosen: RunFigures, sizing: Sizing, backing: Backing, backed: str) -> Snippet:
    d = sizing.plan.deployment
    if chosen.worker_class == "gthread":
        command = f"gunicorn -k gthread --workers {d.workers} --threads {d.concurrency} wsgi:app"
        command += proxy_lines(d.workers * d.concurrency)
    elif chosen.worker_class in ("eventlet", "gevent"):
        command = (
            f"gunicorn -k {chosen.worker_class} --workers {d.workers} --worker-connections {d.concurrency} wsgi:app"
        )
    else:
        command = f"gunicorn --workers {d.workers} wsgi:app"
    if chosen.worker_class == "eventlet":
        command += (
            "\n# eventlet needs gunicorn<26 and is deprecated; gevent is the supported green worker:"
            f"\n# -k gevent with psycogreen ({backing.line(scenarios.GEVENT_SIZED)})"
        )
    return Snippet("gunicorn", "sh", command + LIVENESS_LINES, backed)


#: Said wherever the lab advises gthread (its answer, a team's fix): what keeps it answering.
PROXY_NOTE = "behind a buffering proxy (nginx, or an ingress that buffers requests: docs/faults.md#idle-clients)"


def proxy_lines(served: int | None = None) -> str:
    """Where gthread is advised: what keeps it answering. ``served``: how many requests its workers
    serve at once, when known."""
    held = (
        "each client that sends half a request holds a thread: as many as its threads"
        if served is None
        else f"{served:,} clients that send half a request hold all {served:,} threads"
    )
    return (
        "\n# behind a buffering proxy (nginx: deploy/nginx/healthz.conf, or an ingress that buffers requests):"
        f"\n# {held}, and its health check fails (docs/faults.md, idle clients)"
    )


#: The liveness probe's own listener (healthz.liveness), for any gunicorn app: the faults measured why.
LIVENESS_LINES = (
    "\n# the liveness probe on a listener of its own (:8001), answered while every request waits on the"
    "\n# database; healthz's configs: HEALTHZ_LIVENESS_BIND=0.0.0.0:8001; any app's gunicorn.conf.py:"
    "\n# def post_worker_init(worker):"
    '\n#     from healthz import liveness; liveness.start("0.0.0.0:8001")'
)


def pgbouncer_ini(pool_mode: str, default_pool_size: int, max_client_conn: int | None = None) -> str:
    """A pgbouncer.ini for PgBouncer on the application host, on its Unix socket (as measured)."""
    clients = f"max_client_conn = {max_client_conn}  ; every worker's requests in flight\n" if max_client_conn else ""
    return (
        "[pgbouncer]\n"
        f"pool_mode = {pool_mode}\n"
        f"default_pool_size = {default_pool_size}  ; server connections per database and user\n"
        f"{clients}"
        "unix_socket_dir = /var/run/postgresql\n"
        "listen_port = 6432"
    )


def _pgbouncer(sizing: Sizing, backing: Backing) -> Snippet:
    d = sizing.plan.deployment
    return Snippet(
        "PgBouncer (pgbouncer.ini), when the budget or the ports need it",
        "ini",
        pgbouncer_ini("transaction", sizing.server_pool_size, d.workers * d.concurrency),
        backing.line(scenarios.PGBOUNCER_KEPT, scenarios.PGBOUNCER_UNIX),
    )


def snippets(chosen: RunFigures, sizing: Sizing, backing: Backing, chosen_name: str) -> list[Snippet]:
    """Settings to paste for Flask/SQLAlchemy, Django (persistent connections under gthread, Django
    5.1+'s pool, PgBouncer's Unix socket), gunicorn and PgBouncer, each sized by ``sizing`` and
    each with the measured run behind it (own services first: ``django-*`` from make lab-django).
    ``pool_timeout`` stays SQLAlchemy's 30 s unless the p99 comes within a tenth of it."""
    timeout = 30 if not chosen.p99_ms or chosen.p99_ms < 3000 else math.ceil(chosen.p99_ms / 1000 * 10)
    backed = backing.line(chosen_name)
    return [
        _flask(sizing, timeout, backed),
        _django_gthread(sizing, backing),
        _django_pool(sizing, timeout, backing),
        _django_pgbouncer(backing),
        _gunicorn(chosen, sizing, backing, backed),
        _pgbouncer(sizing, backing),
    ]


# -- the advice -----------------------------------------------------------------------------------
