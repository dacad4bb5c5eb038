"""The ``healthz`` command: seed the database, run a throwaway PostgreSQL, serve the app."""

from __future__ import annotations

import os
import signal
import sys
import time

import click

from . import __version__
from .config import WORKER_CLASSES, Settings, SettingsError, mask_password
from .plan import DEFAULT_HOLD_MS

database_url_option = click.option(
    "--database-url",
    envvar="DATABASE_URL",
    metavar="URL",
    help="postgresql://USER:PASSWORD@HOST:PORT/DBNAME (default: $DATABASE_URL).",
)


class _Commands(click.Group):
    """The commands, with ``lab``, ``check`` and ``bench`` loaded only when one of them is run: the service's
    host needs neither their packages nor the time to import them."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), "bench", "check", "lab"])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name == "lab":
            from healthz.lab.cli import lab

            return lab
        if name == "check":
            from healthz.lab.check_cli import check

            return check
        if name == "bench":
            from healthz.bench.__main__ import main as bench

            return bench
        return super().get_command(ctx, name)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="healthz")
def main() -> None:
    """A connection-pooling lab for Flask + SQLAlchemy.

    \b
    Example:
        healthz postgres &                # a throwaway PostgreSQL, prints DATABASE_URL
        healthz init-db --roles 10
        gunicorn -c python:healthz.gunicorn_conf.gevent healthz.wsgi:app
    """


def _settings(database_url: str | None) -> Settings:
    if not database_url:
        raise click.UsageError("no database: pass --database-url or set DATABASE_URL (healthz postgres starts one)")
    try:
        return Settings.from_env({**os.environ, "DATABASE_URL": database_url})
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None


@main.command("init-db")
@database_url_option
@click.option(
    "--roles", default=10, show_default=True, type=click.IntRange(min=0), help="Rows role-1..role-N to ensure."
)
def init_db_command(database_url: str | None, roles: int) -> None:
    """Create the role table and seed it; running it again adds nothing.

    \b
    Example:
        DATABASE_URL=postgresql://healthz:secret@127.0.0.1:5432/healthz healthz init-db --roles 10
    """
    import sqlalchemy.exc

    from . import db

    settings = _settings(database_url)
    try:
        count = db.seed(settings, roles)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise click.ClickException(
            f"cannot seed {settings.safe_database_url}: {mask_password(str(getattr(exc, 'orig', exc)).strip())}"
        ) from None
    click.echo(f"role table ready on {settings.safe_database_url}: {count} rows")


def _wait_for_signal() -> None:
    stop = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.append(1))
    while not stop:
        time.sleep(0.2)


@main.command("postgres")
@click.option(
    "--max-connections",
    default=4096,
    show_default=True,
    type=click.IntRange(min=10),
    help="max_connections, as in the report.",
)
@click.option(
    "--log-connections/--no-log-connections",
    default=False,
    show_default=True,
    help="Log every connection and disconnection.",
)
@click.option("--roles", default=10, show_default=True, type=click.IntRange(min=0), help="Seed role-1..role-N.")
def postgres_command(max_connections: int, log_connections: bool, roles: int) -> None:
    """Run a throwaway PostgreSQL in the foreground until Ctrl-C; its data goes with it.

    Prints the export line for DATABASE_URL (the password is random and shown only here).

    \b
    Example:
        healthz postgres --max-connections 4096
    """
    from .postgres import PostgresError, PostgreSQL

    try:
        with PostgreSQL(max_connections=max_connections, log_connections=log_connections) as pg:
            from . import db

            db.seed(_settings(pg.url), roles)
            click.echo(f"# {pg.binaries}, data in {pg.directory}; Ctrl-C stops it and removes the data")
            click.echo(f"export DATABASE_URL={pg.url}")
            _wait_for_signal()
    except PostgresError as exc:
        raise click.ClickException(str(exc)) from None


@main.command("serve")
@database_url_option
@click.option("--worker-class", type=click.Choice(WORKER_CLASSES), default="eventlet", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="Port on 127.0.0.1.")
def serve_command(database_url: str | None, worker_class: str, port: int) -> None:
    """Serve the app with the config healthz.gunicorn_conf.WORKER_CLASS on 127.0.0.1.

    Without a database URL a throwaway PostgreSQL is started and seeded first, and removed
    when gunicorn stops. HEALTHZ_* and GUNICORN_* variables apply as usual.

    \b
    Example:
        HEALTHZ_POOL_SIZE=20 HEALTHZ_MAX_OVERFLOW=0 healthz serve --worker-class eventlet
    """
    import subprocess

    from .postgres import PostgreSQL
    from .service import gunicorn_command

    pg = None
    try:
        if not database_url:
            pg = PostgreSQL(max_connections=4096).start()
            database_url = pg.url
            click.echo(f"# throwaway {pg.binaries} on 127.0.0.1:{pg.port}")
        from . import db

        db.seed(_settings(database_url), 10)
        env = {**os.environ, "DATABASE_URL": database_url, "GUNICORN_BIND": f"127.0.0.1:{port}"}
        click.echo(f"# serving http://127.0.0.1:{port}/api/v1/healthz/ with {worker_class} workers; Ctrl-C stops")
        process = subprocess.Popen(gunicorn_command(worker_class), env=env)
        try:
            status = process.wait()
        except KeyboardInterrupt:
            process.send_signal(signal.SIGTERM)
            status = process.wait(30)
        sys.exit(status)
    finally:
        if pg is not None:
            pg.cleanup()


@main.command("plan")
@click.option("--hosts", default=1, show_default=True, type=click.IntRange(min=1), help="Application hosts.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1), help="gunicorn workers per host.")
@click.option("--worker-class", type=click.Choice(WORKER_CLASSES), default="eventlet", show_default=True)
@click.option(
    "--concurrency",
    default=1000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Greenlets per eventlet or gevent worker (gunicorn's worker_connections).",
)
@click.option(
    "--threads", default=None, type=click.IntRange(min=1), help="Threads per gthread worker (default 1, as gunicorn's)."
)
@click.option(
    "--max-connections",
    default=100,
    show_default=True,
    type=click.IntRange(min=1),
    help="The database's max_connections.",
)
@click.option(
    "--reserved-connections",
    default=3,
    show_default=True,
    type=click.IntRange(min=0),
    help="superuser_reserved_connections (+ reserved_connections on PostgreSQL 16+).",
)
@click.option(
    "--other-connections",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Connections other clients hold (migrations, cron, replicas, psql).",
)
@click.option(
    "--port-range",
    default="32768-60999",
    show_default=True,
    metavar="LOW-HIGH",
    help="The application hosts' net.ipv4.ip_local_port_range.",
)
@click.option(
    "--pool-size", default=None, type=click.IntRange(min=1), help="The pool_size you want per worker, to check it fits."
)
@click.option(
    "--rate",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    help="Requests/s per host: sizes the pool by need (with --hold-ms) and judges a service without a pool.",
)
@click.option(
    "--hold-ms",
    default=DEFAULT_HOLD_MS,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Milliseconds a request holds its connection (with --rate: connections needed = rate x hold x 1.5).",
)
@click.option(
    "--db-cores",
    default=None,
    type=click.IntRange(min=1),
    help="The database server's cores: caps the pools at about 2 x cores + 1 active connections in all.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan_command(
    hosts,
    workers,
    worker_class,
    concurrency,
    threads,
    max_connections,
    reserved_connections,
    other_connections,
    port_range,
    pool_size,
    rate,
    hold_ms,
    db_cores,
    as_json,
) -> None:
    """Size the pools: the largest safe pool_size per worker, PgBouncer's settings when it is
    needed, and the connection rate at which a host runs out of ephemeral ports.

    Pure arithmetic on what you give; nothing is contacted. Exits 1 when an external pooler is
    needed, 0 otherwise.

    \b
    Example:
        healthz plan --hosts 4 --workers 6 --worker-class eventlet --concurrency 2000 --max-connections 4096
        healthz plan --hosts 2 --workers 4 --worker-class gthread --threads 8 --max-connections 100 --pool-size 20
        healthz plan --workers 6 --max-connections 4096 --rate 2000 --hold-ms 10 --db-cores 16
    """
    import json

    from .plan import Deployment, PlanError, parse_port_range, plan, render

    if threads is not None and worker_class != "gthread":
        raise click.UsageError(
            f"--threads applies to --worker-class gthread, not {worker_class}; use --concurrency for greenlets"
        )
    per_worker = (threads or 1) if worker_class == "gthread" else concurrency
    try:
        deployment = Deployment(
            hosts=hosts,
            workers=workers,
            worker_class=worker_class,
            concurrency=per_worker,
            max_connections=max_connections,
            reserved_connections=reserved_connections,
            other_connections=other_connections,
            port_range=parse_port_range(port_range),
            pool_size=pool_size,
            rate=rate,
            hold_ms=hold_ms,
            db_cores=db_cores,
        )
    except PlanError as exc:
        raise click.UsageError(str(exc)) from None
    result = plan(deployment)
    click.echo(json.dumps(result.to_dict(), indent=1) if as_json else render(result))
    sys.exit(1 if result.pooler_needed else 0)


@main.command("doctor")
@database_url_option
@click.option(
    "--sample",
    default=10.0,
    show_default=True,
    type=click.FloatRange(1, 600),
    help="Seconds to watch connections open.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the observation and the diagnosis as JSON.")
def doctor_command(database_url: str | None, sample: float, as_json: bool) -> None:
    """Find connection churn or a blown connection budget on this application host, read-only.

    Reads this host's port range, tcp_tw_reuse and sockets toward the database, and the
    database's max_connections, backends and session counter over SAMPLE seconds; says what it
    found and which settings to change. Exits 0 when healthy, 1 when a problem is found, 2 when
    the host or the database could not be inspected, 3 when the database's address cannot be
    reached from this host at all with ports to spare (EADDRNOTAVAIL that is not port exhaustion:
    localhost taken as ::1 where IPv6 is disabled).

    \b
    Example:
        healthz doctor --database-url $DATABASE_URL --sample 10
    """
    import json

    from .doctor import DoctorError, diagnose, observe, render, to_dict

    if not database_url:
        raise click.UsageError("no database: pass --database-url or set DATABASE_URL")
    try:
        observation = observe(database_url, sample)
    except DoctorError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    diagnosis = diagnose(observation)
    click.echo(json.dumps(to_dict(observation, diagnosis), indent=1) if as_json else render(observation, diagnosis))
    sys.exit(doctor_exit_status(diagnosis))


def doctor_exit_status(diagnosis) -> int:
    """``healthz doctor``'s exit status for ``diagnosis``: 0 healthy, 3 unreachable address, else 1."""
    from .doctor import UNREACHABLE

    if diagnosis.healthy:
        return 0
    return 3 if UNREACHABLE in diagnosis.problems else 1


@main.command("locustfile")
@click.option(
    "--step-ramp", is_flag=True, help="Add the step ramp's shape (comma-joined, as locust -f takes several files)."
)
def locustfile_command(step_ramp: bool) -> None:
    """Print the path of the packaged locustfile, for locust -f; it needs the lab extra's locust.

    \b
    Example:
        locust -f "$(healthz locustfile)" --host http://127.0.0.1:8000 --headless -u 500 -r 500 -t 20s --connection close
    """
    from .locustfiles import HEALTHCHECK, STEP_RAMP

    click.echo(f"{HEALTHCHECK},{STEP_RAMP}" if step_ramp else str(HEALTHCHECK))
