"""``healthz bench`` (also ``python -m healthz.bench``): the benchmark's command line (``make bench``
runs it with the defaults)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from healthz.config import WORKER_CLASSES

from . import cases, table


@click.command("bench", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--duration", type=click.IntRange(1), default=3, show_default=True, help="Seconds per measured wrk run.")
@click.option(
    "--repeats",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Measured runs per figure (the median is reported).",
)
@click.option(
    "--warmup", type=click.IntRange(1), default=1, show_default=True, help="Seconds of unmeasured load first."
)
@click.option(
    "--connections", type=click.IntRange(1), default=100, show_default=True, help="wrk's keep-alive connections."
)
@click.option(
    "--reconnect-every",
    type=click.IntRange(0),
    default=100,
    show_default=True,
    help="Every Nth request closes its connection, so connections spread across workers; 0 never.",
)
@click.option(
    "--crowd",
    type=click.IntRange(0),
    default=2000,
    show_default=True,
    help="Connections for the zero-failures run of the sized pool; 0 skips it.",
)
@click.option("--crowd-duration", type=click.IntRange(1), default=10, show_default=True, help="Seconds of that run.")
@click.option(
    "--rate-duration",
    type=click.IntRange(0),
    default=8,
    show_default=True,
    help="Seconds of each fixed-rate run (50%, 90% and 150% of the sized pool's closed-model maximum); 0 skips them.",
)
@click.option(
    "--rate-connections",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="Most connections the fixed-rate driver opens.",
)
@click.option(
    "--django/--no-django",
    default=True,
    show_default=True,
    help="Run the report's Django project (examples/django-report) beside healthz, when it and Django are here.",
)
@click.option(
    "--check/--no-check",
    default=True,
    show_default=True,
    help="Time healthz check (2,000 requests at 100 clients) cold, PostgreSQL start included, and on a reused server.",
)
@click.option(
    "--worker-class",
    "worker_classes",
    multiple=True,
    type=click.Choice(WORKER_CLASSES),
    help="Worker classes to measure (repeatable; default: all four).",
)
@click.option(
    "--pool",
    "pools",
    multiple=True,
    type=click.Choice(tuple(cases.POOLS)),
    help="Pools to measure (repeatable; default: all).",
)
@click.option(
    "--variant",
    "variants",
    multiple=True,
    type=click.Choice((*cases.VARIANTS, *cases.DRIVER_VARIANTS)),
    help="Variants of eventlet's sized pool, and psycopg (the sized pool on psycopg 3 for each worker class but eventlet); repeatable; default: all.",
)
@click.option("--no-variants", is_flag=True, help="Measure no variant.")
@click.option(
    "--statement-requests",
    type=click.IntRange(1),
    default=200,
    show_default=True,
    help="Requests sent while PostgreSQL counts statements, per case.",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("bench-results"),
    show_default=True,
    help="Directory for bench.json and the services' logs.",
)
@click.option(
    "--show",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    metavar="JSON",
    help="Print the table of an earlier run's bench.json instead of running.",
)
@click.option("--markdown", is_flag=True, help="Print the table as Markdown too.")
def main(worker_classes, pools, variants, no_variants, output, show, markdown, **measured) -> None:
    """Measure healthz against its ceiling (livez), NullPool and pgbench, with wrk.

    Starts a throwaway PostgreSQL and, for each worker class and pool, a gunicorn with two workers;
    prints a table and the targets, and writes OUTPUT/bench.json.

    \b
    Example:
        healthz bench --worker-class eventlet --pool queuepool-sized --pool nullpool --crowd 0
    """
    if show:
        results = json.loads(show.read_text())
    else:
        from .runner import Bench, BenchConfig

        chosen = cases.default_cases(
            worker_classes or WORKER_CLASSES,
            pools or tuple(cases.POOLS),
            () if no_variants else variants or (*cases.VARIANTS, *cases.DRIVER_VARIANTS),
        )
        # The other options are the config's fields by the same names (duration, repeats, crowd ...).
        config = BenchConfig(
            cases=chosen,
            output=output,
            # Recorded as `healthz bench ...` whichever way it was started.
            command_line=shlex.join(["healthz", "bench", *sys.argv[2 if click.get_current_context().parent else 1 :]]),
            **measured,
        )
        results = Bench(config).run()
        click.echo(f"results: {output / Bench.RESULTS}", err=True)
    click.echo(table.render(results))
    if markdown:
        click.echo("\n" + table.markdown(results))


if __name__ == "__main__":
    main()
