"""``healthz check``: the CI guard's command line (see :mod:`healthz.lab.check`)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import click

from healthz.config import mask_password
from healthz.lab.check import DEFAULT_CLIENTS, DEFAULT_SESSIONS_PER_REQUEST, Budget, CheckError, CheckOptions


def _env(pairs: tuple[str, ...]) -> dict[str, str]:
    from healthz.lab.own_service import AppSpecError, parse_env

    try:
        return parse_env(pairs)
    except AppSpecError as exc:
        raise CheckError(str(exc)) from None


@click.command("check")
@click.option(
    "--app",
    required=True,
    metavar="COMMAND",
    help="The command that serves HTTP, with {bind}, {port}, {database_url}, {db_host} ... placeholders.",
)
@click.option(
    "--app-dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="Where the command runs (default: here).",
)
@click.option(
    "--python",
    "python",
    type=click.Path(path_type=Path, exists=True),
    help="An interpreter or venv whose bin/ goes first on PATH.",
)
@click.option(
    "--setup", metavar="COMMAND", help="Run once before the service, on its empty database (migrations, create_all)."
)
@click.option(
    "--env", "env", multiple=True, metavar="KEY=VALUE", help="Set for the service and its setup (repeatable)."
)
@click.option("--path", default="/api/v1/healthz/", show_default=True, help="The endpoint the load calls.")
@click.option("--ready-path", help="The endpoint that must answer 200 before the load (default: --path).")
@click.option(
    "--ready-timeout", type=float, default=60.0, show_default=True, help="Seconds the service has to get ready."
)
@click.option(
    "-c", "--clients", type=int, default=DEFAULT_CLIENTS, show_default=True, help="Concurrent clients (locust users)."
)
@click.option("-n", "--requests", type=int, help="Requests to send (default 2,000 unless --duration is given).")
@click.option("-d", "--duration", type=float, help="Seconds of load (with --requests: whichever ends first).")
@click.option("--rate", type=float, help="Requests per second in all (an open model); default: back to back.")
@click.option(
    "--connection",
    type=click.Choice(["close", "keep-alive"]),
    default="close",
    show_default=True,
    help="close: a new client connection per request, as ab without -k.",
)
@click.option(
    "--database-url",
    metavar="URL",
    help="The database the service uses (a CI service container); default: a throwaway PostgreSQL with an empty database for it.",
)
@click.option(
    "-t",
    "--topology",
    type=click.Choice(["auto", "loopback", "netns"]),
    default="loopback",
    show_default=True,
    help="netns (root): the service on a host of its own, as in production; loopback: every process here.",
)
@click.option(
    "--max-sessions-per-request",
    type=float,
    default=DEFAULT_SESSIONS_PER_REQUEST,
    show_default=True,
    help="Sessions PostgreSQL may open per request served.",
)
@click.option(
    "--sqlalchemy-pool",
    metavar="KEY=VALUE,...",
    help="Lay these pool arguments over every SQLAlchemy engine the service makes, without editing it "
    "(pool_size, max_overflow, pool_timeout, pool_recycle, pool_pre_ping, pool_use_lifo, poolclass).",
)
@click.option("--max-failed", type=int, default=0, show_default=True, help="Failed requests allowed.")
@click.option("--max-p99-ms", type=float, help="p99 latency allowed, in ms.")
@click.option("--max-backends", type=int, help="Peak client backends allowed on the service's database.")
@click.option("--json", "as_json", is_flag=True, help="Print every figure as JSON (the one line goes to stderr).")
@click.option(
    "--junit-xml",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the result as JUnit XML for the CI to show.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, file_okay=False),
    help="Keep the run's files (logs, locust's CSV) here.",
)
@click.pass_context
def check(ctx: click.Context, **opts) -> None:
    """Fail a build that brings connection churn back: run the service under load and judge the
    sessions PostgreSQL opened per request, failed requests, p99 and peak backends against a budget.

    Exit 0 and one line when it held, 1 and the line naming what broke when it did not, 2 when the
    check could not run.

    \b
    Example:
        healthz check --app 'gunicorn myapp.wsgi:application -k gevent -w 2 -b {bind}' \\
            --setup 'python manage.py migrate' --clients 100 --requests 2000
    """
    from healthz.lab import overlays
    from healthz.lab.check import junit_xml
    from healthz.lab.check_run import run_check
    from healthz.lab.cli import command_line, require_lab, resolve_topology
    from healthz.lab.topology import TopologyError

    require_lab()
    try:
        topology, note = resolve_topology(opts["topology"])
        # The options are CheckOptions' and Budget's fields by the same names.
        budget = Budget(**{f.name: opts.pop(f.name) for f in dataclasses.fields(Budget)})
        output, as_json, junit = opts.pop("output"), opts.pop("as_json"), opts.pop("junit_xml")
        pool = overlays.parse_pool(opts["sqlalchemy_pool"]) if opts["sqlalchemy_pool"] else None
        fields = {"env": _env(opts["env"]), "topology": topology, "budget": budget, "sqlalchemy_pool": pool}
        options = CheckOptions(**{**opts, **fields})
        if output is not None and output.exists() and any(output.iterdir()):
            raise CheckError(f"--output {output}: not empty; give a new folder")
        if note:
            click.echo(note, err=True)
        result = run_check(options, output, command_line(ctx))
    except (CheckError, TopologyError, overlays.OverlayError) as exc:
        click.echo(f"healthz check: {mask_password(str(exc))}", err=True)
        sys.exit(2)
    if junit:
        junit.write_text(junit_xml(result))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=1))
        click.echo(result.summary(), err=True)
    else:
        click.echo(result.summary())
    if result.log:
        click.echo("the service's log, the lines that matter:\n" + result.log, err=True)
    sys.exit(result.exit_status)
