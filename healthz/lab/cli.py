"""``healthz lab``: run the comparison, list the scenarios, remake a report."""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from healthz.config import SettingsError, mask_password
from healthz.lab import LabExtraMissing, require_extra
from healthz.lab.own_service import DEFAULT_PATH
from healthz.lab.topology import PORTS

TOPOLOGIES = ("auto", "netns", "loopback")
DEFAULT_CONCURRENCY = "100,500,1000"
#: ``lab run --quick``'s step: it exhausts netns's 1,000 ports within seconds (its scenarios: scenarios.QUICK).
QUICK_CONCURRENCY = 500
QUICK_DURATION = 8.0

scenarios_file_option = click.option(
    "--scenarios-file",
    "scenarios_files",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="TOML",
    help="More scenarios, one [scenario.NAME] table each (repeatable).",
)


# Options lab run and lab faults share, each with the default and help text of its command.
def scenario_option(text: str):
    return click.option("--scenario", "-s", "specs", multiple=True, metavar="NAME[:key=value,...]", help=text)


def connection_option(text: str):
    return click.option("--connection", type=click.Choice(["close", "keep-alive"]), default=None, help=text)


def topology_option(text: str):
    return click.option("--topology", "-t", type=click.Choice(TOPOLOGIES), default="auto", show_default=True, help=text)


def ports_option(default: int, text: str):
    return click.option("--ports", default=default, show_default=True, type=click.IntRange(*PORTS), help=text)


def max_connections_option(default: int, text: str):
    return click.option("--max-connections", default=default, show_default=True, type=click.IntRange(min=20), help=text)


def output_option(text: str):
    return click.option("--output", "-o", type=click.Path(path_type=Path, file_okay=False), default=None, help=text)


def app_options(f):
    """--app and the options that describe its service (--path, --app-dir, --python, --setup, --env)."""
    f = click.option(
        "--env", "env", multiple=True, metavar="KEY=VALUE", help="With --app: set for it and its setup (repeatable)."
    )(f)
    f = click.option(
        "--setup", metavar="COMMAND", help="With --app: run once on its empty database (migrations, create_all)."
    )(f)
    f = click.option(
        "--python", "python", type=click.Path(path_type=Path, exists=True), help="With --app: its venv or interpreter."
    )(f)
    f = click.option(
        "--app-dir",
        type=click.Path(path_type=Path, file_okay=False, exists=True),
        help="With --app: where the command runs (default: here). Nothing in it is written.",
    )(f)
    f = click.option(
        "--path",
        default=DEFAULT_PATH,
        show_default=True,
        help="With --app: the endpoint locust calls, which must answer 200 before the load.",
    )(f)
    f = click.option(
        "--app",
        metavar="COMMAND",
        default=None,
        help="Your own service: a command serving HTTP, run from here where the lab's service runs, as scenario "
        "'app' (placeholders such as {port} and {db_host}, DATABASE_URL, PG* and PORT as in docs/own-service.md).",
    )(f)
    return f


@click.group("lab")
def lab() -> None:
    """The experiment: does connection pooling alone fix EADDRNOTAVAIL under load?

    A run that seems stuck prints every thread's stack on SIGUSR1 (kill -USR1 PID).

    \b
    Example:
        healthz lab list
        healthz lab run --topology netns --concurrency 200,500,1000 --duration 20
    """
    import faulthandler
    import signal

    with contextlib.suppress(AttributeError, ValueError, OSError):  # no SIGUSR1, or no real stderr to write to
        faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)


@lab.command("list")
@scenarios_file_option
def list_command(scenarios_files: tuple[Path, ...]) -> None:
    """The scenarios and what each stands for.

    \b
    Example:
        healthz lab list --scenarios-file my-scenarios.toml
    """
    from healthz.lab.scenarios import ScenarioError, select

    try:
        chosen = select((), scenarios_files)
    except ScenarioError as exc:
        raise click.UsageError(str(exc)) from None
    for scenario in chosen:
        click.echo(f"{scenario.name}\n    {scenario.summary()}\n    {scenario.description}\n")


def require_lab() -> None:
    """Stop in one line (exit 1) when the lab extra is not installed."""
    try:
        require_extra()
    except LabExtraMissing as exc:
        raise click.ClickException(str(exc)) from None


def command_line(ctx: click.Context) -> str:
    """The command as given, rebuilt from its parsed options (those left at their default are
    left out), password masked: ``healthz lab faults --fault worker-kill --users 10``."""
    args = ctx.command_path.split()
    args[0] = "healthz"
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if not isinstance(param, click.Option) or value in (None, (), False) or value == param.default:
            continue
        values = value if isinstance(value, (tuple, list)) else [value]
        for item in values:
            args += [next((o for o in param.opts if o.startswith("--")), param.opts[0])] + (
                [] if param.is_flag else [str(item)]
            )
    return mask_password(shlex.join(args))


def run_and_report(lab_run, folder: Path, write, summary) -> None:
    """Run ``lab_run`` (a Lab), then write its report with ``write(folder)`` and print
    ``summary(data)``. Ctrl-C or SIGTERM still reports what was measured, then exits 130; a lab
    error exits 1 with its message, password masked."""
    from healthz.lab.runner import LabError
    from healthz.lab.topology import TopologyError
    from healthz.postgres import PostgresError

    interrupted = False
    try:
        lab_run.run()
    except KeyboardInterrupt:
        interrupted = True
        click.echo("\ninterrupted: every process and namespace the lab started has been stopped", err=True)
    except (LabError, TopologyError, PostgresError) as exc:
        raise click.ClickException(mask_password(str(exc))) from None
    if not lab_run.results:
        sys.exit(130 if interrupted else 1)
    paths = write(folder)
    click.echo("\n" + summary({"meta": lab_run.meta, "results": lab_run.results}))
    click.echo(f"\nReport: {paths['markdown']} and {paths['html']}")
    if interrupted:
        sys.exit(130)


def resolve_topology(name: str) -> tuple[str, str | None]:
    """``(topology, note)``: ``auto`` is netns where this machine can host it, else loopback with
    the reason; an explicit ``netns`` raises :class:`TopologyError` saying what is missing."""
    from healthz.lab.topology import Netns, TopologyError

    if name == "netns":
        Netns.check()
    if name != "auto":
        return name, None
    try:
        Netns.check()
    except TopologyError as exc:
        return "loopback", f"topology auto: loopback, because {exc}"
    return "netns", "topology auto: netns (root and iproute2 found)"


@contextlib.contextmanager
def refused_as_usage_error() -> Iterator[None]:
    """A lab refusal (bad scenario, setting, topology or configuration) as click's usage error: one
    line, exit status 2. Scenario and settings errors are ValueErrors."""
    from healthz.lab.runner import LabError
    from healthz.lab.topology import TopologyError

    try:
        yield
    except (ValueError, LabError, TopologyError, SettingsError) as exc:
        raise click.UsageError(str(exc)) from None


def lab_config(topology: str, output: Path | None, avoid_netns: str | None = None, **fields: Any):
    """The :class:`LabConfig` of the current command: ``topology`` resolved (``auto`` stays on
    loopback when ``avoid_netns`` gives a reason), ``output`` defaulted, the command line recorded;
    the choice of topology is said on stderr."""
    from healthz.lab.runner import LabConfig, default_output

    if avoid_netns and topology == "auto":  # the reason holds whether or not this host could run netns
        topology_name, note = "loopback", f"topology auto: loopback, because {avoid_netns}"
    elif avoid_netns and topology == "netns":  # LabConfig refuses the pair before root is even asked for
        topology_name, note = "netns", None
    else:
        topology_name, note = resolve_topology(topology)
    config = LabConfig(
        topology=topology_name,
        output=output or default_output(),
        command_line=command_line(click.get_current_context()),
        **fields,
    )
    if note:
        click.echo(note, err=True)
    return config


@lab.command("run")
@scenario_option(
    "Scenario to run (repeatable; default: all). NAME:key=value,... changes a scenario or defines a new one."
)
@scenarios_file_option
@click.option(
    "--concurrency",
    "-c",
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    metavar="N,N,...",
    help="Concurrent locust users at each step.",
)
@click.option(
    "--duration",
    "-d",
    default=15.0,
    show_default=True,
    type=click.FloatRange(1, 3600),
    help="Seconds of load per step.",
)
@click.option(
    "--max-requests", default=500_000, show_default=True, type=click.IntRange(min=1), help="Request cap per step."
)
@click.option(
    "--rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 100_000),
    metavar="REQ/S",
    help="A fixed arrival rate at every step, spread over its users, each request timed from when it was due "
    "(no coordinated omission); 0: each user sends back to back.",
)
@connection_option(
    "Client connections for every scenario: close (a new TCP connection per request, like ab) or keep-alive. Default: each scenario's own (close)."
)
@topology_option("netns reproduces port exhaustion (root); loopback runs anywhere; auto picks netns when it can.")
@ports_option(1000, "netns: size of the app host's ip_local_port_range.")
@click.option(
    "--delay-ms",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 10000),
    help="netns: tc netem delay on each end of the app-database link.",
)
@click.option(
    "--hosts",
    default=1,
    show_default=True,
    type=click.IntRange(1, 8),
    help="netns: application hosts, each with its own gunicorn and port range, sharing the clients and one PostgreSQL.",
)
@click.option(
    "--database-url",
    metavar="URL",
    default=None,
    help="Use this PostgreSQL instead of a throwaway one (loopback topology; needs table role, or --seed).",
)
@click.option(
    "--seed", is_flag=True, help="With --database-url: create and seed table role (the only write the lab makes)."
)
@max_connections_option(4096, "max_connections of the throwaway PostgreSQL, as in the report.")
@click.option(
    "--load-processes",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="locust processes sharing the users (locust's --processes): more when the report says the load generator was saturated.",
)
@click.option(
    "--load-workers",
    default=0,
    show_default=True,
    type=click.IntRange(0, 64),
    help="locust's distributed mode: a master and this many worker processes (netns: spread over load hosts of "
    "their own, up to 4, so the service sees each one's ports); 0: locust alone, or --load-processes.",
)
@click.option(
    "--quick",
    is_flag=True,
    help="The answer in about a minute: the three setups that decide it (a connection per request, the default "
    f"pool, a bounded pool) at {QUICK_CONCURRENCY} clients for {QUICK_DURATION:g} s (or --duration).",
)
@click.option(
    "--target",
    metavar="URL",
    default=None,
    help="A service already running (its health endpoint's full URL): locust drives it, the lab reads --database-url's "
    "counters (read-only) and says which figures it could not take.",
)
@app_options
@click.option(
    "--try-fixes",
    is_flag=True,
    help="With --app: after its steps as it is, try its framework's fixes on its unchanged code where it failed "
    "or was at risk, sized by its load, and answer with the one that held (docs/own-service.md).",
)
@output_option("Folder for results and report (default: lab-results/<timestamp>).")
def run_command(
    specs, scenarios_files, concurrency, duration, topology, quick, app, target, path, output, **fields
) -> None:
    """Run each scenario at each concurrency step under locust and write the report.

    Starts a throwaway PostgreSQL (or uses --database-url), then for each scenario and step a
    fresh gunicorn, a bounded locust run and the probes; everything started is stopped on every
    exit path, Ctrl-C included. Ends with the verdict table and the report's path.

    \b
    Example:
        healthz lab run --quick
        healthz lab run --topology netns --concurrency 200,500,1000 --duration 20
        healthz lab run -s eventlet-nullpool -s eventlet-queuepool-sized --database-url $URL
        healthz lab run -s 'eventlet-queuepool-sized:pool_size=40' -c 2000
        healthz lab run -s eventlet-nullpool-pgbouncer -s eventlet-queuepool-sized --hosts 3
        healthz lab run --scenarios-file mine.toml        # your own service: docs/own-service.md
        healthz lab run --app 'gunicorn myapp.wsgi -b {bind} -k eventlet' -c 500
        healthz lab run --app 'gunicorn mysite.wsgi -b {bind}' --app-dir ../mysite --python ../mysite/.venv \\
            --setup 'python manage.py migrate' --try-fixes -c 200,1000
        healthz lab run --target http://127.0.0.1:8000/api/v1/healthz/ --database-url $URL -c 200 -d 30
    """
    require_lab()
    from healthz.lab import report
    from healthz.lab.runner import Lab
    from healthz.lab.scenarios import parse_concurrency

    own = {k: fields.pop(k) for k in ("app_dir", "python", "setup", "env", "try_fixes")}
    if quick:
        specs, concurrency, duration = _quick(specs, scenarios_files, app, target, duration)
    with refused_as_usage_error():
        config = lab_config(
            topology,
            output,
            avoid_netns="--database-url is given (netns runs its own PostgreSQL)" if fields["database_url"] else None,
            scenarios=_chosen(specs, scenarios_files, app, path, target, own),
            concurrency=parse_concurrency(concurrency),
            duration=duration,
            scenarios_files=list(scenarios_files),
            # The other options are LabConfig's fields by the same names (rate, ports, hosts ...).
            **fields,
        )
    _announce(config)
    run_and_report(Lab(config), config.output, report.write, report.terminal)


def _quick(specs, scenarios_files, app, target, duration: float) -> tuple[tuple[str, ...], str, float]:
    """``--quick``'s scenarios, step and duration (``--duration`` when given); it chooses the
    setups and the step itself, so it refuses the options that choose them."""
    ctx = click.get_current_context()
    chosen = [
        name
        for name, given in (
            ("--scenario", specs),
            ("--scenarios-file", scenarios_files),
            ("--app", app),
            ("--target", target),
            ("--concurrency", ctx.get_parameter_source("concurrency") == click.core.ParameterSource.COMMANDLINE),
        )
        if given
    ]
    if chosen:
        raise click.UsageError(
            f"--quick runs its own three scenarios at {QUICK_CONCURRENCY} clients: drop {', '.join(chosen)} "
            "(or drop --quick to choose them)"
        )
    if ctx.get_parameter_source("duration") != click.core.ParameterSource.COMMANDLINE:
        duration = QUICK_DURATION
    from healthz.lab.scenarios import QUICK

    return QUICK, str(QUICK_CONCURRENCY), duration


def _chosen(specs, scenarios_files, app: str | None, path: str, target: str | None, own: dict) -> list:
    """The scenarios ``lab run`` (or ``lab faults``) was asked for: the running service of ``--target`` alone, else the
    ``--scenario`` specs from the defaults and ``--scenarios-file``, with ``--app``'s own service
    (``own``: its --app-dir, --python, --setup, --env and --try-fixes, refused without it)."""
    from healthz.lab.scenarios import own_service, running_service, select

    given = [f"--{k.replace('_', '-')}" for k, v in own.items() if v]
    if given and not app:
        raise click.UsageError(
            f"{', '.join(given)} describe(s) --app's service: add --app COMMAND, or put them in a scenarios file"
        )
    if target and (specs or app or scenarios_files):
        raise click.UsageError("--target drives the running service alone: drop --scenario, --scenarios-file and --app")
    if target:
        return [running_service(target)]
    return select(specs, scenarios_files, [own_service(app, path, **own)] if app else [])


def _announce(config) -> None:
    """What ``lab run`` is about to do, on stderr: the database it reads (password masked) and the runs."""
    if config.database_url:
        click.echo(
            f"using {mask_password(config.database_url)}: the lab reads pg_stat_* and runs SELECT count(*) FROM role"
            + ("; --seed: it will create and seed table role" if config.seed else "; it writes nothing"),
            err=True,
        )
    click.echo(
        f"{len(config.scenarios)} scenario(s) x {len(config.concurrency)} step(s) of {config.duration:g} s, "
        f"topology {config.topology}"
        + (f" with {config.hosts} application hosts" if config.hosts > 1 else "")
        + (f", locust distributed over {config.load_workers} workers" if config.load_workers else "")
        + f"; results in {config.output}",
        err=True,
    )


@lab.command("faults")
@click.option(
    "--fault",
    "-f",
    "fault_names",
    multiple=True,
    metavar="NAME",
    help="Fault to inject (repeatable; default: all). One of: db-restart-fast, db-restart-immediate, too-many-clients, "
    "pool-exhausted, statement-timeout, slow-network, worker-kill, db-down-at-start.",
)
@scenario_option(
    "Scenario to break (repeatable; default: eventlet-nullpool, eventlet-queuepool-sized, gevent-queuepool-sized, gthread-queuepool)."
)
@scenarios_file_option
@click.option(
    "--users",
    "-u",
    default=50,
    show_default=True,
    type=click.IntRange(1, 5000),
    help="Steady locust users during each fault.",
)
@connection_option("Client connections for every scenario (default: each scenario's own).")
@topology_option("netns is needed for slow-network; loopback runs anywhere.")
@ports_option(
    28000, "netns: size of the app host's ip_local_port_range (wide, so that port exhaustion does not mix in)."
)
@max_connections_option(100, "max_connections of the throwaway PostgreSQL (too-many-clients fills it).")
@app_options
@output_option("Folder for faults.json and the fault report (default: lab-results/<timestamp>).")
def faults_command(
    fault_names, specs, scenarios_files, users, connection, topology, ports, max_connections, output, app, path, **own
) -> None:
    """Break the service under steady load, one fault at a time, and report how it copes.

    Each fault runs against each scenario on a throwaway PostgreSQL (never --database-url: the
    faults stop, fill and lock the server). Your own service (--app, or a scenarios file with app)
    gets the faults that need nothing of the lab's service, on an empty database of its own. Per run: errors during the fault by kind, seconds from
    the fault's end until every response is 200 again, backends left, worker restarts, and
    whether that is what the fault should cause. Writes faults.md, faults.html and faults.json.

    \b
    Example:
        healthz lab faults
        healthz lab faults --fault db-restart-fast --scenario eventlet-queuepool-sized --output DIR
        healthz lab faults --app 'gunicorn mysite.wsgi -b {bind}' --app-dir ../mysite --python ../mysite/.venv \\
            --setup 'python manage.py migrate' --path /health/ --fault worker-kill --fault db-restart-fast
    """
    require_lab()
    from healthz.lab import fault_report, faults
    from healthz.lab.fault_runner import FaultLab, load_seconds
    from healthz.lab.scenarios import select

    with refused_as_usage_error():
        chosen_faults = faults.select(fault_names)
        chosen = _chosen(specs, scenarios_files, app, path, None, own)
        if not specs and not any(s.own_service for s in chosen):
            chosen = select(faults.DEFAULT_SCENARIOS, scenarios_files)
        config = lab_config(
            topology,
            output,
            scenarios=chosen,
            concurrency=[users],
            ports=ports,
            max_connections=max_connections,
            connection=connection,
            scenarios_files=list(scenarios_files),
        )
    topology_name, folder = config.topology, config.output
    lab_run = FaultLab(config, chosen_faults)
    plan = lab_run.plan()
    click.echo(
        f"{len(chosen_faults)} fault(s) x {len(chosen)} scenario(s): {len(plan)} runs, about "
        f"{sum(load_seconds(lab_run, f) for f, _ in plan) / 60:.0f} min of load at {users} users, topology "
        f"{topology_name}; results in {folder}",
        err=True,
    )
    run_and_report(lab_run, folder, fault_report.write, fault_report.summary_table)


@lab.command("report")
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False, exists=True))
def report_command(folder: Path) -> None:
    """Remake the reports from FOLDER: report.md, report.html, results.csv and the plots from its
    results.json (healthz lab run), faults.md, faults.html and the timelines from its faults.json
    (healthz lab faults).

    \b
    Example:
        healthz lab report lab-results/20261127T060000Z
    """
    require_lab()

    from healthz.lab import fault_report, report

    found = [name for name in ("results.json", "faults.json") if (folder / name).exists()]
    if not found:
        raise click.UsageError(
            f"{folder} has no results.json or faults.json: give a folder written by healthz lab run or healthz lab faults"
        )
    if "results.json" in found:
        paths = report.write(folder)
        click.echo(report.terminal(report.read(folder)))
        click.echo(f"\nReport: {paths['markdown']} and {paths['html']}")
    if "faults.json" in found:
        paths = fault_report.write(folder)
        click.echo(fault_report.summary_table(fault_report.read(folder)))
        click.echo(f"\nFault report: {paths['markdown']} and {paths['html']}")
