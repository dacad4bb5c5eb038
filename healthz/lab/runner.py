"""The experiment: for each scenario and concurrency step, a fresh service under a bounded locust
run, sampled throughout, then every figure saved.

Order of one run: renew the app side of the topology (a fresh namespace in ``netns``, so TIME_WAIT
left by one run never eats the next run's ports), start gunicorn with the scenario's environment,
wait until ``/api/v1/healthz/`` answers 200, read PostgreSQL's session counter, sample probes while
locust runs for ``duration`` seconds or ``max_requests`` requests, stop locust and gunicorn, read the
counter again once it settles, and summarise. Everything started is stopped on every exit path.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg2
from sqlalchemy.engine import make_url

from healthz import versions
from healthz.config import Settings, mask_password
from healthz.db import seed as seed_roles
from healthz.doctor import Diagnosis, diagnose
from healthz.harness import store
from healthz.lab import load, probes, require_extra
from healthz.lab import topology as topologies
from healthz.lab.figures import Placement, RunFigures, Sample
from healthz.lab.own_service import DEFAULT_PATH, AppService, RunningService, mask, placeholders, run_setup
from healthz.lab.pgbouncer import Console, PgBouncer, PgBouncerError, login_pattern
from healthz.lab.probes import LineCounter
from healthz.lab.scenarios import Scenario
from healthz.postgres import PostgreSQL, free_port
from healthz.service import HEALTHY_TIMEOUT, Gunicorn, Service, ServiceError, gunicorn_command

require_extra()

#: Service port inside the app namespace (a fresh namespace has every port free).
NETNS_SERVICE_PORT = 8000
#: Runs shorter than this leave no room for ``healthz doctor`` past the start-up burst.
DOCTOR_MIN_DURATION = 5.0
#: What the lab cannot measure of a service it does not run (``--target``): it lives on another host.
NOT_TAKEN_FOR_TARGET = (
    "the application host's sockets (TIME_WAIT, ports held, EADDRNOTAVAIL): run `healthz doctor` there",
    "its CPU, worker restarts and log",
)


class LabError(RuntimeError):
    """The lab cannot run as asked; the message says what to do."""


@dataclasses.dataclass
class LabConfig:
    """What one ``healthz lab run`` does. ``database_url`` None means a throwaway PostgreSQL with
    ``max_connections``; ``connection`` overrides every scenario's client connection mode; ``hosts``
    application hosts (netns) share the clients, each with its own gunicorn."""

    scenarios: list[Scenario]
    concurrency: list[int]
    output: Path
    duration: float = 15.0
    max_requests: int = 500_000
    #: Requests per second in all at every step (locust's users paced, timed from each due time); 0: back to back.
    rate: float = 0.0
    topology: str = "loopback"
    ports: int = 1000
    delay_ms: float = 0.0
    database_url: str | None = None
    seed: bool = False
    max_connections: int = 4096
    roles: int = 10
    connection: str | None = None
    interval: float = 0.2
    doctor: bool = True
    hosts: int = 1
    load_processes: int = 1
    #: locust's distributed mode: a master and this many workers (0: locust alone, or load_processes).
    load_workers: int = 0
    command_line: str = ""
    scenarios_files: list[Path] = dataclasses.field(default_factory=list)

    @property
    def drives_a_running_service(self) -> bool:
        """``--target``: the service runs elsewhere; the lab starts none and only reads the database."""
        return any(s.target for s in self.scenarios)

    def __post_init__(self) -> None:
        if not self.scenarios:
            raise LabError("no scenarios to run")
        if self.drives_a_running_service:
            if not self.database_url:
                raise LabError(
                    "--target needs --database-url: the database the running service uses, which the lab reads "
                    "(pg_stat_database, pg_stat_activity) and never writes"
                )
            if self.topology != "loopback" or self.hosts != 1 or len(self.scenarios) != 1:
                raise LabError(
                    "--target drives one running service from this host: no --scenario, --app, --hosts or --topology netns"
                )
        if self.duration <= 0 or self.duration > 3600:
            raise LabError(f"--duration {self.duration:g}: expected seconds between 1 and 3600")
        if self.max_requests < 1:
            raise LabError(f"--max-requests {self.max_requests}: expected an integer >= 1")
        if not 0 <= self.rate <= 100_000:
            raise LabError(f"--rate {self.rate:g}: expected requests per second from 0 (back to back) to 100000")
        if not 1 <= self.load_processes <= 64:
            raise LabError(f"--load-processes {self.load_processes}: expected an integer from 1 to 64")
        if not 0 <= self.load_workers <= 64:
            raise LabError(f"--load-workers {self.load_workers}: expected an integer from 0 (none) to 64")
        if self.load_workers and self.load_processes > 1:
            raise LabError(
                "--load-processes and --load-workers both spread locust over processes: choose one "
                "(--load-workers for separate workers, as on several machines)"
            )
        if self.hosts != 1 and self.topology != "netns":
            raise LabError(
                f"--hosts {self.hosts} needs --topology netns: each application host is a network namespace (root)"
            )
        if self.database_url and self.topology == "netns":
            raise LabError(
                "--database-url cannot be used with --topology netns: the netns topology runs its own "
                "PostgreSQL inside its database namespace; use --topology loopback for your own database"
            )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["scenarios"] = [s.to_dict() for s in self.scenarios]
        data["output"] = str(self.output)
        data["scenarios_files"] = [str(p) for p in self.scenarios_files]
        data["database_url"] = mask_password(self.database_url) if self.database_url else None
        return data


def default_output(root: Path = Path("lab-results")) -> Path:
    """``lab-results/<UTC timestamp>``, never an existing folder."""
    return store.new_folder(root)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80]


def _shell(env: dict[str, str], command: list[str]) -> str:
    """A command a user can paste: ``env VAR=value ... command``, passwords masked."""
    assignments = [f"{key}={shlex.quote(mask_password(value))}" for key, value in sorted(env.items())]
    return " ".join(["env", *assignments, *map(shlex.quote, command)])


class Progress:
    """One line on stderr, rewritten in place on a terminal, printed once per run elsewhere."""

    def __init__(self, stream=sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._last = ""

    def update(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
        self._last = text

    def done(self, text: str) -> None:
        self.stream.write(("\r\033[K" if self.tty else "") + text + "\n")
        self.stream.flush()


class Lab:
    """Runs a :class:`LabConfig` and writes ``results.json`` (the report is made from it)."""

    RESULTS = "results.json"

    def __init__(self, config: LabConfig, progress: Progress | None = None) -> None:
        self.config = config
        self.progress = progress or Progress()
        self.results: list[RunFigures] = []
        self.meta: dict[str, Any] = {}
        # gunicorn --print-config by environment: a second of gunicorn's imports, run beside the service's start.
        self._configs: dict[str, concurrent.futures.Future[str]] = {}
        self._printer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="print-config")
        self._config_files: list[tuple[Path, concurrent.futures.Future[str]]] = []
        self._set_up: set[str] = set()  # scenarios whose own service's setup has run

    # -- set-up ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _database(self, topology) -> Iterator[tuple[str, str, PostgreSQL | None]]:
        """``(service URL, probe DSN, server or None)``, seeded; the throwaway server is removed after."""
        cfg = self.config
        if cfg.database_url:
            url = Settings.from_mapping({"database_url": cfg.database_url}).database_url.replace("+psycopg2", "")
            _check_reachable(url)
            if cfg.drives_a_running_service:
                yield url, url, None  # the running service's own tables: the lab only reads counters
                return
            if cfg.seed:
                seed_roles(Settings.from_mapping({"database_url": url}), cfg.roles)
            else:
                _check_seeded(url)
            yield url, url, None
            return
        pg = PostgreSQL(
            max_connections=cfg.max_connections,
            host=topology.db_host,
            command_prefix=topology.db_prefix,
            settings={"superuser_reserved_connections": 3},
            # Every connection attempt logged with its client address: sessions per application host, and
            # the doctor's host's own connections as they happen (pg_stat_database.sessions can lag by seconds).
            log_connections=True,
        )
        with pg:
            seed_roles(Settings.from_mapping({"database_url": pg.local_url()}), cfg.roles)
            yield pg.url, pg.local_dsn("postgres"), pg

    def run(self) -> list[RunFigures]:
        """Set up the topology and the database, then every run of :meth:`runs`; returns the
        results (also in :attr:`RESULTS`, saved after each run)."""
        cfg = self.config
        if (cfg.output / self.RESULTS).exists():  # checked first: nothing starts for a refused run
            raise LabError(
                f"--output {cfg.output} already holds {self.RESULTS} from an earlier run: choose another folder"
            )
        topology = topologies.make(
            cfg.topology,
            ports=cfg.ports,
            delay_ms=cfg.delay_ms,
            hosts=cfg.hosts,
            load_hosts=min(max(1, cfg.load_workers), topologies.Netns.MAX_LOAD_HOSTS) if cfg.topology == "netns" else 1,
        )
        started = time.time()
        with _unwind_on_termination(), topology, self._database(topology) as (url, probe_dsn, pg):
            cfg.output.mkdir(parents=True, exist_ok=True)
            counters = probes.PostgresCounters(probe_dsn, urlsplit(url).path.lstrip("/"))
            try:
                self.meta = self._meta(topology, pg, counters, started)
                self._save()
                for result in self.runs(topology, url, pg, counters):
                    self.results.append(result)
                    self._save()
            finally:
                counters.close()
        self.meta["finished"] = time.time()
        self.meta["seconds"] = round(self.meta["finished"] - started, 1)
        self._save()
        return self.results

    def runs(
        self, topology, url: str, pg: PostgreSQL | None, counters: probes.PostgresCounters
    ) -> Iterator[RunFigures]:
        """Each run's result in turn: every scenario at every concurrency step."""
        cfg = self.config
        total = len(cfg.scenarios) * len(cfg.concurrency)
        for i, (scenario, users) in enumerate(((s, c) for s in cfg.scenarios for c in cfg.concurrency), 1):
            yield self.run_one(scenario, users, topology, url, pg, counters, label=f"[{i}/{total}]")

    def _meta(
        self, topology, pg: PostgreSQL | None, counters: probes.PostgresCounters, started: float
    ) -> dict[str, Any]:
        with counters.conn.cursor() as cur:
            cur.execute(
                "SELECT current_setting('server_version'), current_setting('max_connections')::int, "
                "current_setting('superuser_reserved_connections')::int"
            )
            version, max_connections, reserved = cur.fetchone()
        return {
            "started": started,
            "command": self.config.command_line,
            "config": self.config.to_dict(),
            "topology": {
                "name": topology.name,
                "description": topology.describe(),
                "faithful": topology.faithful,
                "port_range": list(topology.port_range) if topology.port_range else None,
            },
            "postgres": {
                "version": version,
                "max_connections": max_connections,
                "superuser_reserved_connections": reserved,
                "source": str(pg.binaries) if pg else "--database-url",
            },
            "machine": store.machine(),
            "versions": versions.installed(),
        }

    def _save(self) -> None:
        data = {"meta": self.meta, "results": [self.serialise(r) for r in self.results]}
        store.write_json(self.config.output / self.RESULTS, data)

    @staticmethod
    def serialise(result: RunFigures) -> dict[str, Any]:
        """A result as ``results.json`` holds it."""
        return result.to_dict()

    # -- one run ---------------------------------------------------------------------------
    def rerun_command(self, scenario: Scenario, users: int, connection: str) -> str:
        """The ``healthz lab run`` command that repeats one run (password masked)."""
        cfg = self.config
        args = [
            "healthz",
            "lab",
            "run",
            "--topology",
            cfg.topology,
            *self._selector(scenario),
            "--concurrency",
            str(users),
            "--duration",
            f"{cfg.duration:g}",
            "--max-requests",
            str(cfg.max_requests),
            "--connection",
            connection,
        ]
        args += ["--rate", f"{cfg.rate:g}"] if cfg.rate else []
        args += [arg for path in cfg.scenarios_files for arg in ("--scenarios-file", str(path))]
        if cfg.topology == "netns":
            args += ["--ports", str(cfg.ports)] + (["--delay-ms", f"{cfg.delay_ms:g}"] if cfg.delay_ms else [])
            args += ["--hosts", str(cfg.hosts)] if cfg.hosts > 1 else []
        args += ["--load-processes", str(cfg.load_processes)] if cfg.load_processes > 1 else []
        args += ["--load-workers", str(cfg.load_workers)] if cfg.load_workers else []
        if cfg.database_url:
            args += ["--database-url", mask_password(cfg.database_url)]
        else:
            args += ["--max-connections", str(cfg.max_connections)]
        return shlex.join(args)

    def _selector(self, scenario: Scenario) -> list[str]:
        """The options that choose ``scenario`` again: ``--target``, ``--app`` (and ``--path``), or ``--scenario``."""
        if scenario.target:
            return ["--target", scenario.target]
        if scenario.app and scenario.name == "app" and not self.config.scenarios_files:
            path = ["--path", scenario.app.path] if scenario.app.path != DEFAULT_PATH else []
            return ["--app", scenario.app.command, *path]
        return ["--scenario", scenario.name]

    def _service(
        self, scenario: Scenario, topology, host: topologies.AppHost, url: str, run_dir: Path
    ) -> tuple[Service, dict[str, str]]:
        """An unstarted service for ``scenario`` on application host ``host`` of ``topology`` and
        the environment it is given: our gunicorn (logging into ``run_dir``: ``gunicorn.log`` for the
        first host, ``gunicorn-appN.log`` for the others), or the scenario's own service
        (``service.log``, ``service-appN.log``), whose environment shown is what differs from ours."""
        if scenario.target:
            return RunningService(scenario.target, client_prefix=topology.client_prefix), {}
        port = NETNS_SERVICE_PORT if topology.name == "netns" else free_port()
        if scenario.app:
            log = run_dir / ("service.log" if host.index == 0 else f"service-{host.name}.log")
            service = AppService(
                scenario.app,
                placeholders(host.service_host, port, url),
                log,
                command_prefix=host.prefix,
                client_prefix=topology.client_prefix,
            )
            return service, {k: v for k, v in service.env.items() if os.environ.get(k) != v}
        # livez on a listener of its own, as the recommended deployment's liveness probe has it.
        liveness = f"{host.service_host}:{port + 1 if topology.name == 'netns' else free_port()}"
        env = {
            **scenario.environment(url),
            "GUNICORN_GRACEFUL_TIMEOUT": "3",
            "GUNICORN_BACKLOG": "4096",
            "HEALTHZ_LIVENESS_BIND": liveness,
        }
        log = run_dir / ("gunicorn.log" if host.index == 0 else f"gunicorn-{host.name}.log")
        gunicorn = Gunicorn(
            scenario.worker_class,
            env,
            log,
            host=host.service_host,
            port=port,
            command_prefix=host.prefix,
            client_prefix=topology.client_prefix,
        )
        return gunicorn, env

    def _commands(
        self,
        scenario: Scenario,
        server: Service,
        env: dict[str, str],
        topology,
        locust_cmd: list[str],
        run_dir: Path,
        rerun: str,
        workers: list[list[str]] | None = None,
    ) -> dict[str, str]:
        """The run's commands (rerun, the service, locust), also written to ``commands.txt`` beside
        ``gunicorn --print-config``'s output (our gunicorn's only); passwords masked."""
        ours = isinstance(server, Gunicorn)
        if ours:
            service = {"gunicorn": _shell(env, [*topology.app_prefix, *gunicorn_command(scenario.worker_class)])}
        elif isinstance(server, RunningService):
            service = {"target": server.url}
        else:
            secret, spec = server.values["db_password"], server.spec
            where = f"cd {shlex.quote(str(spec.app_dir))} && " if spec.app_dir else ""
            service = {"service": mask(where + _shell(env, server.command), secret)}
            if spec.setup:
                setup = [*topology.app_prefix, *spec.setup_argv(server.values)]
                service["setup"] = mask(where + _shell(env, setup), secret)
        commands = {"rerun": rerun, **service, "locust": shlex.join([*topology.client_prefix, *locust_cmd])}
        for i, worker in enumerate(workers or [], 1):
            commands[f"locust worker {i}"] = shlex.join(worker)
        (run_dir / "commands.txt").write_text("\n\n".join(f"# {k}\n{v}" for k, v in commands.items()) + "\n")
        if not ours:
            return commands
        key = json.dumps(env, sort_keys=True)
        if key not in self._configs:
            self._configs[key] = self._printer.submit(_print_config, scenario, env)
        self._config_files.append((run_dir / "gunicorn-config.txt", self._configs[key]))
        return commands

    def _write_configs(self) -> None:
        """Write each ``gunicorn-config.txt`` whose ``--print-config`` was started by :meth:`_commands`."""
        while self._config_files:
            path, printed = self._config_files.pop()
            path.write_text(printed.result())

    def _doctor_result(
        self, doctor: probes.DoctorProbe, samples: list[Sample], topology, scenario: Scenario
    ) -> dict[str, Any]:
        """The doctor's diagnosis beside the one the same rules give on the lab's own figures over the
        doctor's window (:func:`probes.measured_observation`), and whether they agree."""
        data = doctor.result(timeout=doctor.sample + 30) or {}
        if "diagnosis" not in data:
            return {"exit": data.get("exit"), "error": mask_password(str(data.get("error", "not run")))[:300]}
        seen, said = data["observation"], data["diagnosis"]
        pg = self.meta.get("postgres", {})
        measured = probes.measured_observation(
            samples,
            seen["started_at"],
            seen["started_at"] + seen["window"],
            port_range=topology.port_range,
            max_connections=pg.get("max_connections", seen["max_connections"]),
            reserved_connections=pg.get("superuser_reserved_connections", seen["reserved_connections"]),
            # The doctor's host's own connections when a log counts them (PgBouncer's, or PostgreSQL's with
            # several hosts), else PostgreSQL's session counter.
            opened_key="host_opened" if any(s.host_opened is not None for s in samples) else "sessions",
            transport=scenario.pgbouncer.transport,
        )
        measured_diagnosis = diagnose(measured) if measured else None
        return {
            "exit": data["exit"],
            "status": said["status"],
            "opened": seen["opened"],
            "sessions_opened": seen["sessions_opened"],
            "window": seen["window"],
            "opened_per_second": said["opened_per_second"],
            "seconds_to_exhaustion": said["seconds_to_exhaustion"],
            "exhausted": bool(said.get("exhausted")),
            "findings": said["findings"],
            "measured_status": measured_diagnosis.status if measured_diagnosis else None,
            "measured_sessions_per_second": measured_diagnosis.opened_per_second if measured_diagnosis else None,
            "agrees": None
            if measured_diagnosis is None
            else set(measured_diagnosis.problems) == set(Diagnosis.problems_of(said)),
        }

    def _pgbouncers(self, scenario: Scenario, topology, url: str) -> tuple[list[PgBouncer], list[str]]:
        """The PgBouncers ``scenario`` places, started (one per application host, or one on the
        database host), and each application host's URL; what was started is stopped on failure."""
        started: list[PgBouncer] = []
        try:
            if scenario.pgbouncer is Placement.DB:
                bouncer, service_url = self._pgbouncer(scenario, topology, url, topology.db_prefix)
                started.append(bouncer)
                return started, [service_url] * len(topology.hosts)
            urls = []
            for host in topology.hosts:
                bouncer, service_url = self._pgbouncer(scenario, topology, url, host.prefix)
                started.append(bouncer)
                urls.append(service_url)
            return started, urls
        except BaseException:
            for bouncer in started:
                bouncer.stop()
            raise

    def _pgbouncer(self, scenario: Scenario, topology, url: str, prefix: list[str]) -> tuple[PgBouncer, str]:
        """A started PgBouncer in front of the database at ``url``, run with ``prefix``, and the
        URL the service is to use."""
        parts = make_url(url)
        on_db = scenario.pgbouncer is Placement.DB
        bouncer = PgBouncer(
            server_host=parts.host or "127.0.0.1",
            server_port=parts.port or 5432,
            password=parts.password or "",
            database=parts.database or "healthz",
            user=parts.username or "healthz",
            pool_mode=scenario.pgbouncer_pool_mode,
            default_pool_size=scenario.pgbouncer_pool_size,
            listen_host=topology.db_host if on_db else "127.0.0.1",
            command_prefix=prefix,
        )
        bouncer.start()
        return bouncer, scenario.pgbouncer.service_url(bouncer.url, bouncer.unix_url)

    def _sampler(
        self,
        counters: probes.PostgresCounters,
        gunicorns: list[Service],
        locust: load.Locust,
        pg: PostgreSQL | None,
        url: str,
        bouncer: PgBouncer | None = None,
        extra=None,
    ) -> probes.Sampler:
        """The run's sampler: sockets toward PostgreSQL's port, and PgBouncer's when the service
        reaches it over TCP (``bouncer``), on every application host; backends by address with
        several hosts."""
        ports = [pg.port if pg else _port_of(url)] + ([bouncer.listen_port] if bouncer else [])
        return probes.Sampler(
            counters,
            db_port=ports,
            netns_pid=[(lambda g=g: g.pid) for g in gunicorns],
            interval=self.config.interval,
            extra=extra,
            by_address=len(gunicorns) > 1,
            cpu_pids={
                "gunicorn": lambda: [g.pid for g in gunicorns],
                "postgres": lambda: pg.process.pid if pg and pg.process else None,
                "locust": lambda: locust.pid if locust.running() else None,
            },
        )

    def run_one(
        self,
        scenario: Scenario,
        users: int,
        topology,
        url: str,
        pg: PostgreSQL | None,
        counters: probes.PostgresCounters,
        label: str = "",
    ) -> RunFigures:
        """One scenario at one concurrency: its :class:`RunFigures` (also in the run's ``result.json``).

        Every process the run starts (PgBouncers, gunicorns, the doctor, locust, the sampler) is
        entered in one :class:`contextlib.ExitStack` as it starts, so each is stopped exactly once
        on every exit path: on success when the figures need it stopped, else when the stack closes."""
        connection = self.config.connection or scenario.connection
        run_dir = self.config.output / "runs" / slug(f"{scenario.name}-c{users}-{connection}")
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            topology.renew_app(**scenario.knobs)
            refused = None
        except topologies.TopologyError as exc:
            refused = f"scenario {scenario.name}: {exc}"
        with contextlib.ExitStack() as stack:
            stack.callback(self._write_configs)  # last: once the service has stopped
            run = self._prepare(scenario, users, connection, topology, url, pg, run_dir, label, stack, refused)
            result = self._identity(run, topology)
            try:
                if run.error:
                    raise ServiceError(run.error)
                result.update(self._measure(run, topology, url, pg, counters, stack))
            except ServiceError as exc:
                result["error"] = mask_password(str(exc))
        figures = RunFigures.from_dict(result)
        store.write_json(run_dir / "result.json", figures.to_dict())
        self.progress.done(f"{run.head}: {one_line(figures)}")
        return figures

    def _prepare(
        self,
        scenario: Scenario,
        users: int,
        connection: str,
        topology,
        url: str,
        pg: PostgreSQL | None,
        run_dir: Path,
        label: str,
        stack: contextlib.ExitStack,
        refused: str | None = None,
    ) -> _Run:
        """The run's parts, unstarted but for its PgBouncers; each entered in ``stack``. A PgBouncer
        that cannot start is the run's ``error``, as is ``refused`` (then nothing starts)."""
        cfg, hosts = self.config, topology.hosts
        run = _Run(scenario, users, connection, run_dir, hosts, service_urls=[url] * len(hosts), error=refused)
        run.head = f"{label} {scenario.name} c={users} {connection}" + (
            f" hosts={len(hosts)}" if len(hosts) > 1 else ""
        )
        if scenario.pgbouncer.pooled and not run.error:
            try:
                run.bouncers, run.service_urls = self._pgbouncers(scenario, topology, url)
            except PgBouncerError as exc:
                run.error = mask_password(str(exc))
            for bouncer in run.bouncers:  # stopped last: their server connections end, and PostgreSQL logs them
                stack.callback(bouncer.stop)
        services = [
            self._service(scenario, topology, host, run.service_urls[i], run_dir) for i, host in enumerate(hosts)
        ]
        run.gunicorns, run.env = [g for g, _ in services], services[0][1]
        for gunicorn in run.gunicorns:
            stack.callback(gunicorn.stop)
        # locust's own default port in the client namespace, which is ours alone; any free one on loopback.
        master_port = (5557 if topology.name == "netns" else free_port()) if cfg.load_workers else 0
        run.locust_cmd = load.locust_command(
            run.gunicorns[0].base_url,
            users,
            cfg.duration,
            connection=connection,
            max_requests=cfg.max_requests,
            rate=cfg.rate,
            csv_prefix=run.csv_prefix,
            html=run_dir / "locust.html",
            stats_interval=cfg.interval,
            targets=[g.base_url for g in run.gunicorns],
            path=scenario.path,
            processes=cfg.load_processes,
            workers=cfg.load_workers,
            master_port=master_port,
        )
        # A running service's host is not this one: the doctor must run there.
        if cfg.doctor and cfg.duration >= DOCTOR_MIN_DURATION and not scenario.target:
            run.doctor = probes.DoctorProbe(
                run.service_urls[0], doctor_sample(cfg.duration), run_dir / "doctor.log", command_prefix=hosts[0].prefix
            )
            stack.callback(run.doctor.stop)
        load_hosts = topology.load_hosts()
        workers = [load_hosts[j % len(load_hosts)] for j in range(cfg.load_workers)]
        run.locust = load.Locust(
            run.locust_cmd,
            run_dir / "locust.log",
            command_prefix=topology.client_prefix,
            workers=[(load.worker_command(master, master_port), prefix) for prefix, master in workers],
        )
        stack.callback(run.locust.stop)  # first to stop: no new requests
        if pg and pg.log_connections and len(hosts) > 1:
            run.connection_log = probes.ConnectionLog(pg.logfile)
        return run

    def _identity(self, run: _Run, topology) -> dict[str, Any]:
        """What ran: the scenario, the step, where its files are and the commands that repeat it."""
        scenario = run.scenario
        commands = self._commands(
            scenario,
            run.gunicorns[0],
            run.env,
            topology,
            run.locust_cmd,
            run.run_dir,
            self.rerun_command(scenario, run.users, run.connection),
            run.locust.worker_commands,
        )
        pgbouncer = self._identity_pgbouncer(run) if scenario.pgbouncer.pooled else None
        return {
            "scenario": scenario.name,
            "description": scenario.description,
            "summary": scenario.summary(),
            "worker_class": scenario.worker_class,
            "workers": scenario.workers,
            "worker_concurrency": scenario.concurrency_per_worker,
            "pool": scenario.pool_shape().to_dict(),
            "concurrency": run.users,
            "connection": run.connection,
            "topology": topology.name,
            "run_dir": str(run.run_dir.relative_to(self.config.output)),
            "hosts": len(run.hosts),
            "own_service": scenario.own_service,
            "not_taken": list(NOT_TAKEN_FOR_TARGET) if scenario.target else [],
            "counterpart": scenario.counterpart,
            "tcp_tw_reuse": topology.tcp_tw_reuse,
            "commands": commands,
            "error": None,
            "pgbouncer": pgbouncer,
        }

    def _measure(
        self,
        run: _Run,
        topology,
        url: str,
        pg: PostgreSQL | None,
        counters: probes.PostgresCounters,
        stack: contextlib.ExitStack,
    ) -> dict[str, Any]:
        """Start the service, drive the load, stop everything (``stack``), and return the figures."""
        scenario = run.scenario
        if scenario.app and scenario.app.setup and scenario.name not in self._set_up:
            self.progress.update(f"{run.head}: setup")
            first = run.gunicorns[0]
            run_setup(scenario.app, first.values, run.run_dir / "setup.log", run.hosts[0].prefix)
            self._set_up.add(scenario.name)
        self.progress.update(f"{run.head}: starting the service")
        # Before the service starts: the sessions its workers open at start-up count too.
        sessions_before = counters.settled_sessions()
        if run.connection_log:
            run.connection_log.mark()
        for server in run.gunicorns:
            server.start()
            status, body = server.wait_for(scenario.path, HEALTHY_TIMEOUT, request_timeout=5)
            if status != 200:
                raise ServiceError(
                    f"{scenario.path} answered {status} before any load: {mask_password(body.strip())[:300]}"
                )
        metrics_before = self._pool_totals(run.gunicorns)
        tcp_bouncer = run.bouncers[0] if run.bouncers and run.scenario.pgbouncer.transport == "tcp" else None
        sampler = self._sampler(
            counters,
            run.gunicorns,
            run.locust,
            pg,
            url,
            tcp_bouncer,
            _extra_probe(run.scenario, run.bouncers, pg, run.hosts[0]),
        )
        sampler.start()
        stack.callback(lambda: sampler.is_alive() and sampler.stop())
        self._drive(run)
        run.locust.stop()
        samples = sampler.stop()
        times = probes.pool_times(metrics_before, self._pool_totals(run.gunicorns))
        doctor = self._doctor_result(run.doctor, samples, topology, run.scenario) if run.doctor else None
        stack.close()  # every gunicorn and PgBouncer stops now, once: the session counter settles after
        return self._figures(run, topology, samples, sessions_before, counters) | {"doctor": doctor, **times}

    @staticmethod
    def _pool_totals(services: list[Service]) -> dict[str, float]:
        """:func:`probes.pool_totals` of every service's ``/metrics``, summed (none from a service without it)."""
        total: dict[str, float] = {}
        for service in services:
            status, body = service.get("/metrics", timeout=5)
            for key, value in (probes.pool_totals(body) if status == 200 else {}).items():
                total[key] = total.get(key, 0.0) + value
        return total

    def _drive(self, run: _Run) -> None:
        """locust's bounded run, with the doctor started past the start-up burst and the progress line."""
        duration = self.config.duration
        began = time.monotonic()
        run.locust.start()
        deadline = began + duration + 30
        first: tuple[float, dict[int, float]] | None = None
        last: tuple[float, dict[int, float]] | None = None
        while run.locust.running() and time.monotonic() < deadline:
            time.sleep(0.5)
            if run.doctor and not run.doctor.started and time.monotonic() - began >= doctor_lead(duration):
                run.doctor.start()
            # The load generator's CPU, each process its own, from 1 s in (past the fork and the spawn).
            reading = (time.monotonic(), run.locust.process_cpu())
            if reading[1] and reading[0] - began >= 1.0:
                first, last = first or reading, reading
            self.progress.update(_progress_line(run.head, time.monotonic() - began, duration, run.csv_prefix))
        if first and last:
            run.load_busiest = load.busiest_share(first[1], last[1], last[0] - first[0])

    def _figures(
        self, run: _Run, topology, samples: list[Sample], sessions_before: int, counters: probes.PostgresCounters
    ) -> dict[str, Any]:
        """Every figure of a finished run, from locust's files, the samples and PostgreSQL's counters."""
        sessions_after = counters.settled_sessions()
        # A running service keeps its pool: its backends are counted as they are, not waited out.
        backends_left = counters.wait_backends(0, timeout=0 if run.scenario.target else 15.0)
        totals = load.read_summary(run.csv_prefix)
        history = load.read_history(run.csv_prefix, self.config.interval)
        service_log = "".join(g.log_text() for g in run.gunicorns)
        figures = summarise(
            totals,
            history,
            samples,
            sessions_before,
            sessions_after,
            backends_left,
            service_log,
            run.scenario,
            topology.port_range,
            hosts=len(run.hosts),
            workers_started=sum(g.booted_at_ready for g in run.gunicorns) if run.scenario.own_service else None,
        )
        if len(run.hosts) > 1:
            by_address = run.connection_log.since_mark() if run.connection_log else {}
            figures["by_host"] = host_figures(run.hosts, run.gunicorns, totals, samples, by_address)
        if run.bouncers:
            figures["pgbouncer"] = {**self._identity_pgbouncer(run), **pooler_figures(samples)}
        locust_log = run.locust.logfile.read_text(errors="replace") if run.locust.logfile.exists() else ""
        figures["load_generator"] = {
            "processes": self.config.load_workers or self.config.load_processes,
            "busiest_share": run.load_busiest,
            "cpu_warning": load.CPU_WARNING in locust_log,
        }
        return figures

    @staticmethod
    def _identity_pgbouncer(run: _Run) -> dict[str, Any]:
        scenario = run.scenario
        return {
            "placement": scenario.pgbouncer.value,
            "pool_mode": scenario.pgbouncer_pool_mode,
            "default_pool_size": scenario.pgbouncer_pool_size,
            "instances": len(run.bouncers),
        }


@dataclasses.dataclass
class _Run:
    """The parts of one run, as :meth:`Lab._prepare` made them."""

    scenario: Scenario
    users: int
    connection: str
    run_dir: Path
    hosts: list
    service_urls: list[str]
    head: str = ""
    error: str | None = None  # a part that could not be made (PgBouncer)
    bouncers: list[PgBouncer] = dataclasses.field(default_factory=list)
    gunicorns: list[Service] = dataclasses.field(default_factory=list)  # ours, or the scenario's own
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    locust_cmd: list[str] = dataclasses.field(default_factory=list)
    locust: load.Locust | None = None
    load_busiest: float | None = None  # the busiest locust process's share of a core
    doctor: probes.DoctorProbe | None = None
    connection_log: probes.ConnectionLog | None = None

    @property
    def csv_prefix(self) -> Path:
        return self.run_dir / "locust"


def _extra_probe(scenario: Scenario, bouncers: list[PgBouncer], pg: PostgreSQL | None, first_host):
    """The sampler's extra figures, or None: PgBouncer's SHOW POOLS and SHOW STATS figures and its
    client logins so far, summed over ``bouncers`` (one per application host); and ``host_opened``,
    the connections the first application host (where the doctor runs) opened toward the endpoint
    it uses: its logins to PgBouncer over TCP, else its attempts in PostgreSQL's connection log when
    that is on (several hosts)."""
    consoles = [(Console(b), LineCounter(b.logfile, login_pattern(b.database))) for b in bouncers]
    host_opened = None
    if scenario.pgbouncer is Placement.APP:
        host_opened = consoles[0][1]
    elif scenario.pgbouncer is Placement.DB:
        host_opened = LineCounter(bouncers[0].logfile, login_pattern(bouncers[0].database, first_host.app_host))
    elif not scenario.pgbouncer.pooled and pg is not None and pg.log_connections:
        host_opened = LineCounter(pg.logfile, probes.attempts_pattern(first_host.app_host), from_end=True)
    if not consoles and host_opened is None:
        return None

    def sample() -> dict[str, int]:
        total: collections.Counter = collections.Counter()
        for console, logins in consoles:
            total.update({**console.sample(), "pooler_logins": logins()})
        if host_opened is not None:
            total["host_opened"] = host_opened()
        return dict(total)

    return sample


def pooler_figures(samples: list[Sample]) -> dict[str, Any]:
    """PgBouncer over a run: client connections it accepted (``logins``), transactions, the peak
    of waiting clients and of server connections in use, the longest wait, and the mean wait per
    transaction in ms. None for figures no sample had."""
    rows = [s.pooler for s in samples if s.pooler.get("pooler_logins") is not None]
    if not rows:
        return {"logins": None}
    first, last = rows[0], rows[-1]
    xacts = last["pooler_total_xact_count"] - first["pooler_total_xact_count"]
    waited = last["pooler_total_wait_time"] - first["pooler_total_wait_time"]
    return {
        "logins": last["pooler_logins"] - first["pooler_logins"],
        "transactions": xacts,
        "cl_waiting_peak": probes.peak(s.get("pooler_cl_waiting") for s in rows),
        "sv_active_peak": probes.peak(s.get("pooler_sv_active") for s in rows),
        "maxwait_ms_peak": probes.peak(s["pooler_maxwait"] * 1000 + s["pooler_maxwait_us"] / 1000 for s in rows),
        "wait_ms_per_transaction": round(waited / xacts / 1000, 3) if xacts > 0 else None,
    }


def doctor_lead(duration: float) -> float:
    """Seconds into the load when ``healthz doctor`` starts: past the start-up burst (pools
    filling; PgBouncer opens its server connections a few per second)."""
    return min(3.0, duration * 0.3)


def doctor_sample(duration: float) -> float:
    """The doctor's sample window: done well before the load ends."""
    return round(min(5.0, duration * 0.4), 1)


def host_figures(
    hosts: list,
    gunicorns: list[Service],
    totals: dict[str, Any],
    samples: list[Sample],
    sessions_by_address: dict[str, dict[str, int]],
) -> list[dict[str, Any]]:
    """Each application host's share of a run: requests and failures (locust's ``--targets``
    names), sessions it opened and connections PostgreSQL refused it (PostgreSQL's log, by client
    address: :class:`probes.ConnectionLog`), its peak of client backends
    and of TIME_WAIT and ESTABLISHED sockets, and its service log's EADDRNOTAVAIL lines."""
    figures = []
    for i, (host, gunicorn) in enumerate(zip(hosts, gunicorns)):
        share = totals["by_host"][i] if i < len(totals.get("by_host", [])) else {}
        logged = sessions_by_address.get(host.app_host, {"received": 0, "sessions": 0})
        per_host = [s.hosts[i] for s in samples if len(s.hosts) > i]
        figures.append(
            {
                "host": host.name,
                "address": host.app_host,
                "requests": share.get("requests"),
                "failures": share.get("failures"),
                "failures_by_cause": share.get("failures_by_cause", {}),
                "sessions_opened": logged["sessions"],
                "refused": logged["received"] - logged["sessions"],
                "backends_peak": probes.peak(
                    (s.backends_by_address or {}).get(host.app_host, 0) for s in samples if s.sessions is not None
                ),
                "time_wait_peak": probes.peak(h.time_wait for h in per_host),
                "established_peak": probes.peak(h.established for h in per_host),
                "address_unavailable": probes.log_counts(gunicorn.log_text())["address_unavailable_lines"],
            }
        )
    return figures


@contextlib.contextmanager
def _unwind_on_termination() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt inside the block, so that they unwind like
    Ctrl-C and every ``finally`` (processes, namespaces, the throwaway server) runs. Outside the
    main thread, signals cannot be caught and nothing changes."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous: dict[int, Any] = {}
    try:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            previous[signum] = signal.signal(signum, interrupt)
    except ValueError:
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def summarise(
    totals: dict[str, Any],
    history: list[dict],
    samples: list[Sample],
    sessions_before: int,
    sessions_after: int,
    backends_left: int,
    service_log: str,
    scenario: Scenario,
    port_range: tuple[int, int] | None,
    hosts: int = 1,
    workers_started: int | None = None,
) -> dict[str, Any]:
    """The figures of one run from locust's totals and history, the probe samples, the session
    counter before and after, and the service log (of every host, with ``hosts`` of them).
    Worker restarts count gunicorn's boots beyond ``workers_started`` (default: the scenario's
    workers on every host)."""
    requests, failures = totals["requests"], totals["failures"]
    seconds = totals.get("seconds") or (history[-1]["t"] if history else None)
    sessions = sessions_after - sessions_before
    logged = probes.log_counts(service_log, own_service=scenario.own_service)

    def cpu(name: str) -> float | None:
        values = [s.cpu[name] for s in samples if s.cpu.get(name) is not None]
        if not values:
            return None
        return round(max(values) - (0 if name == "locust" else values[0]), 2)

    return {
        "seconds": seconds,
        "requests": requests,
        "failures": failures,
        "error_rate": failures / requests if requests else None,
        "rps": requests / seconds if seconds else None,
        "p50_ms": totals["p50_ms"],
        "p95_ms": totals["p95_ms"],
        "p99_ms": totals["p99_ms"],
        "failures_by_cause": totals["failures_by_cause"],
        "rate": totals.get("rate"),
        "due": totals.get("due"),
        "late": totals.get("late"),
        "stalled_seconds": load.stalled_seconds(history, history[1]["t"] - history[0]["t"])
        if len(history) > 1
        else 0.0,
        "service_errors": logged["error_kinds"],
        "address_unavailable": logged["address_unavailable_lines"],
        "pool_timeouts": logged["error_kinds"].get("pool_timeout", 0),
        "sessions_opened": sessions,
        "sessions_per_second": sessions / seconds if seconds else None,
        "sessions_per_request": sessions / requests if requests else None,
        "sessions_per_success": sessions / (requests - failures) if requests > failures else None,
        "backends_peak": probes.peak(s.backends for s in samples),
        "backends_mean": probes.mean(s.backends for s in samples),
        "backends_left": backends_left,
        "time_wait_peak": probes.peak(s.time_wait for s in samples),
        "established_peak": probes.peak(s.established for s in samples),
        "ports_held_peak": probes.peak(s.ports_held for s in samples),
        "ports": (port_range[1] - port_range[0] + 1) if port_range else None,
        "cpu_seconds": {name: cpu(name) for name in ("gunicorn", "postgres", "locust")},
        "worker_restarts": probes.worker_restarts(
            service_log, scenario.workers * hosts if workers_started is None else workers_started
        ),
        "worker_timeouts": service_log.count("WORKER TIMEOUT"),
        "samples": samples,
        "history": history,
    }


def one_line(run: RunFigures) -> str:
    """A run's outcome in one line for the terminal."""
    if run.error:
        return f"not measured: {run.error[:200]}"
    causes = ", ".join(f"{k} {v:,}" for k, v in list(run.failures_by_cause.items())[:3])
    return (
        f"{run.rps or 0:,.0f} req/s, p99 {run.p99_ms or 0:,.0f} ms, {run.requests:,} requests, "
        f"{run.failures:,} failed{f' ({causes})' if causes else ''}, {run.sessions_opened:,} sessions opened, "
        f"TIME_WAIT peak {run.time_wait_peak if run.time_wait_peak is not None else '-'}"
    )


def _progress_line(head: str, elapsed: float, duration: float, csv_prefix: Path) -> str:
    live = load.last_progress(csv_prefix)
    figures = f"{live[2]:,.0f} req/s, {live[0]:,.0f} requests, {live[1]:,.0f} failures" if live else "spawning users"
    return f"{head}: {min(elapsed, duration):4.0f}/{duration:g} s | {figures}"


def _print_config(scenario: Scenario, env: dict[str, str]) -> str:
    """``gunicorn --print-config`` for this scenario (resolved settings, passwords masked); the
    same for each of its steps, since only the bind address, which is not in ``env``, differs."""
    result = subprocess.run(
        [*gunicorn_command(scenario.worker_class), "--print-config"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return mask_password(result.stdout + result.stderr)


def _port_of(url: str) -> int:
    return urlsplit(url).port or 5432


def _check_reachable(url: str) -> None:
    try:
        psycopg2.connect(url, connect_timeout=5).close()
    except psycopg2.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LabError(f"--database-url {mask_password(url)} is not reachable: {mask_password(first)}") from None


def _check_seeded(url: str) -> None:
    with contextlib.closing(psycopg2.connect(url, connect_timeout=5)) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('role') IS NOT NULL")
        if not cur.fetchone()[0]:
            raise LabError(
                f"--database-url {mask_password(url)} has no table role: pass --seed to create and seed it (the only write the lab makes)"
            )


__all__ = ["Lab", "LabConfig", "LabError", "Progress", "default_output", "summarise", "one_line"]
