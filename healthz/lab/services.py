"""What a scenario serves, as one of three kinds: :class:`LabService` (ours, gunicorn with the
scenario's settings), :class:`OwnService` (the team's command, ``app``) and :class:`RunningTarget`
(a service already running, ``--target``). Each knows how it is started (or not), where its clients
call it, and what the lab can measure of it; nothing else asks which kind a scenario holds.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from healthz.config import mask_password
from healthz.lab import overlays
from healthz.lab.own_service import DEFAULT_PATH, AppService, AppSpec, AppSpecError, RunningService, mask, placeholders
from healthz.lab.own_service import run_setup as run_app_setup
from healthz.postgres import free_port
from healthz.service import Gunicorn, Service, gunicorn_command

#: The worker class or pool of a service the lab does not configure and was not told about.
UNKNOWN = "unknown"
#: Service port inside the app namespace (a fresh namespace has every port free).
NETNS_SERVICE_PORT = 8000
#: What the lab cannot read of a service it did not start (``--target``).
NOT_TAKEN_FOR_TARGET = (
    "the application host's sockets (TIME_WAIT, ports held, EADDRNOTAVAIL): run `healthz doctor` there",
    "its CPU, worker restarts and log",
)


class ServiceKindError(ValueError):
    """A scenario's service keys do not fit its kind; the message says which and why."""


def _port(topology) -> int:
    return NETNS_SERVICE_PORT if topology.name == "netns" else free_port()


def _log(run_dir: Path, host, first: str, other: str) -> Path:
    return run_dir / (first if host.index == 0 else other.format(host=host.name))


@dataclasses.dataclass(frozen=True)
class LabService:
    """Ours: gunicorn with ``healthz.gunicorn_conf.<worker_class>`` and the scenario's settings."""

    #: The team's service (its worker class and pool are what the team declares, not what the lab sets).
    own: ClassVar[bool] = False
    #: The lab starts it, on every application host, and stops it after the load.
    started: ClassVar[bool] = True
    #: Whether the lab tries fixes on it after its steps (the team's code, ``try_fixes``).
    tries_fixes: ClassVar[bool] = False
    #: Whether it is gunicorn, whose master the deploys signal.
    runs_gunicorn: ClassVar[bool] = True
    #: What the lab waits for before the load: livez, which needs no database.
    ready_path: ClassVar[str] = "/api/v1/livez/"

    @property
    def path(self) -> str:
        return DEFAULT_PATH

    def summary(self, scenario) -> str | None:
        """None: the scenario's own summary of worker class, pool and clients says it all."""
        return None

    def make(self, scenario, topology, host, url: str, run_dir: Path) -> tuple[Service, dict[str, str]]:
        """An unstarted gunicorn on ``host`` (log ``gunicorn.log``, ``gunicorn-appN.log``) and its environment."""
        port = _port(topology)
        # livez on a listener of its own, as the recommended deployment's liveness probe has it.
        liveness = f"{host.service_host}:{port + 1 if topology.name == 'netns' else free_port()}"
        env = {
            **scenario.environment(url),
            "GUNICORN_GRACEFUL_TIMEOUT": "3",
            "GUNICORN_BACKLOG": "4096",
            "HEALTHZ_LIVENESS_BIND": liveness,
        }
        log = _log(run_dir, host, "gunicorn.log", "gunicorn-{host}.log")
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

    def selector(self, scenario, from_files: bool) -> list[str]:
        """The options of ``healthz lab run`` that choose this scenario again."""
        return ["--scenario", scenario.name]

    def commands(self, scenario, service: Service, env: dict[str, str], topology) -> dict[str, str]:
        """The commands that start it as the lab did, by name, to paste (passwords masked)."""
        return {"gunicorn": shell_line(env, [*topology.app_prefix, *gunicorn_command(scenario.worker_class)])}

    #: Whether ``gunicorn --print-config`` on its configuration says what it resolved.
    prints_config: ClassVar[bool] = True

    #: Whether it has a setup to run once before its first step.
    has_setup: ClassVar[bool] = False

    def set_up(self, service: Service, log: Path, prefix: Sequence[str]) -> None:
        """Run the scenario's setup (logging into ``log``) before its first step."""

    @property
    def not_taken(self) -> tuple[str, ...]:
        """What the lab cannot measure of this service."""
        return ()

    @property
    def doctor_runs_here(self) -> bool:
        """Whether ``healthz doctor`` can run beside the service (on its application host)."""
        return True

    @property
    def backends_settle_s(self) -> float:
        """How long the service's backends get to close after it stops (0: it does not stop)."""
        return 15.0

    def workers_started(self, services: Sequence[Service]) -> int | None:
        """Workers the service started before it was ready (None: the lab sets them)."""
        return None

    def stack(self, service: Service, like=None):
        """What it runs, read from its venv and command (:mod:`healthz.lab.stack`; ``like``: the same
        code's, read already); None when the lab knows it already (ours) or cannot read it (a running target)."""
        return None

    def refusal(self, scenario) -> str | None:
        """Why ``scenario``'s other keys cannot apply to this kind, or None."""
        return None

    def not_applied(self, run_dir: Path, stack) -> str | None:
        """Why a fix laid over the service from outside did not reach it, or None (ours: none is laid)."""
        return None

    def engines(self, run_dir: Path) -> list[dict[str, Any]]:
        """The SQLAlchemy engines its processes made in the run in ``run_dir`` (ours: known already)."""
        return []

    #: Whether it gets an empty database of its own on the lab's throwaway server (else the lab's,
    #: seeded with its ``role`` table, or the one ``--database-url`` names).
    database_of_its_own: ClassVar[bool] = False

    def with_app_keys(self, name: str, keys: Mapping[str, Any], root: Path | None) -> LabService | OwnService:
        """This kind with app keys applied: ``app`` makes it the team's command."""
        if not keys:
            return self
        if "app" not in keys:
            raise ServiceKindError(
                f"scenario {name}: {', '.join(sorted(keys))} need(s) app, the command that serves HTTP"
            )
        return OwnService(_spec(name, None, keys, root))

    def to_dict(self) -> dict[str, Any]:
        return {"app": None, "target": None}


@dataclasses.dataclass(frozen=True)
class OwnService:
    """The team's command (:class:`~healthz.lab.own_service.AppSpec`), started on every application
    host with the lab's placeholders and environment; its setup runs once before its first step."""

    spec: AppSpec
    own: ClassVar[bool] = True
    started: ClassVar[bool] = True

    @property
    def path(self) -> str:
        return self.spec.path

    @property
    def tries_fixes(self) -> bool:
        return self.spec.try_fixes

    @property
    def runs_gunicorn(self) -> bool:
        return self.spec.is_gunicorn

    @property
    def ready_path(self) -> str:
        return self.spec.ready

    def summary(self, scenario) -> str:
        """Its command and where it runs, with what its scenario declares of worker class and pool."""
        declared = f"{scenario.worker_class} workers={scenario.workers}" if scenario.worker_class != UNKNOWN else ""
        pool = scenario.pool_shape()
        if pool.pool_class == "QueuePool":
            declared += f", QueuePool(pool_size={pool.pool_size}, max_overflow={pool.max_overflow})"
        elif pool.pool_class == "SingletonThreadPool":
            declared += f", SingletonThreadPool(pool_size={pool.pool_size})"
        elif pool.pool_class != UNKNOWN:
            declared += f", {pool.pool_class}"
        where = f" in {_shown(self.spec.app_dir)}" if self.spec.app_dir else ""
        laid = [
            f"{key}={value}"
            for key in ("sqlalchemy_pool", "django_databases", "gunicorn_args")
            if (value := getattr(self.spec, key))
        ]
        return (
            f"own service: {self.spec.command}{where}"
            + (f" ({declared.strip(', ')})" if declared else "")
            + (f", laid over it: {'; '.join(laid)}" if laid else "")
            + "".join(f", {k}={v}" for k, v in scenario.knobs.items())
            + f", clients {scenario.connection}"
        )

    def make(self, scenario, topology, host, url: str, run_dir: Path) -> tuple[Service, dict[str, str]]:
        """An unstarted command on ``host`` (log ``service.log``, ``service-appN.log``) and the part of
        its environment that differs from the lab's own."""
        log = _log(run_dir, host, "service.log", "service-{host}.log")
        service = AppService(
            self.spec,
            placeholders(host.service_host, _port(topology), url),
            log,
            command_prefix=host.prefix,
            client_prefix=topology.client_prefix,
        )
        # Its engines and Django settings are recorded always; a fix is laid over them (the run's own folder).
        service.env.update(
            overlays.lay(
                run_dir / "overlay",
                service.env,
                pool=self.spec.sqlalchemy_pool,
                django=self.spec.django_databases,
                gunicorn_args=self.spec.gunicorn_args,
            )
        )
        return service, {k: v for k, v in service.env.items() if os.environ.get(k) != v}

    def engines(self, run_dir: Path) -> list[dict[str, Any]]:
        return overlays.engines(run_dir / "overlay")

    def not_applied(self, run_dir: Path, stack) -> str | None:
        """Why the fix laid over this service did not reach it (read once it answered), or None:
        its figures would be its own setup's, not the fix's."""
        return overlays.not_applied(
            run_dir / "overlay",
            pool=self.spec.sqlalchemy_pool,
            django=self.spec.django_databases,
            gunicorn_args=self.spec.gunicorn_args,
            gunicorn=stack.gunicorn if stack else None,
        )

    def selector(self, scenario, from_files: bool) -> list[str]:
        if scenario.name == "app" and not from_files:
            path = ["--path", self.spec.path] if self.spec.path != DEFAULT_PATH else []
            return ["--app", self.spec.command, *path]
        return ["--scenario", scenario.name]

    def commands(self, scenario, service: Service, env: dict[str, str], topology) -> dict[str, str]:
        secret = service.values["db_password"]
        where = f"cd {shlex.quote(str(self.spec.app_dir))} && " if self.spec.app_dir else ""
        commands = {"service": mask(where + shell_line(env, service.command), secret)}
        if self.spec.setup:
            setup = [*topology.app_prefix, *self.spec.setup_argv(service.values)]
            commands["setup"] = mask(where + shell_line(env, setup), secret)
        return commands

    prints_config: ClassVar[bool] = False

    @property
    def has_setup(self) -> bool:
        return bool(self.spec.setup)

    def set_up(self, service: Service, log: Path, prefix: Sequence[str]) -> None:
        run_app_setup(self.spec, service.values, log, prefix)

    not_taken = LabService.not_taken
    doctor_runs_here = LabService.doctor_runs_here
    backends_settle_s = LabService.backends_settle_s

    def workers_started(self, services: Sequence[Service]) -> int | None:
        return sum(s.booted_at_ready for s in services)

    def stack(self, service: Service, like=None):
        from healthz.lab import stack

        if like is not None and not self.spec.gunicorn_args:
            return like  # the same code, and gunicorn's options unchanged
        argv = self.spec.argv(service.values)
        # Read with the fix laid over (what it runs), but not recorded: the service's own processes are.
        env = {k: v for k, v in service.env.items() if k not in overlays.RECORDS}
        python = stack.interpreter(argv, env.get("PATH")) or sys.executable
        return stack.read(argv, env, self.spec.app_dir, python, like)

    refusal = LabService.refusal  # PgBouncer too: its address reaches the command through the placeholders

    database_of_its_own: ClassVar[bool] = True

    def with_app_keys(self, name: str, keys: Mapping[str, Any], root: Path | None) -> OwnService:
        return OwnService(_spec(name, self.spec, keys, root)) if keys else self

    def to_dict(self) -> dict[str, Any]:
        return {"app": self.spec.to_dict(), "target": None}


@dataclasses.dataclass(frozen=True)
class RunningTarget:
    """A service already running at ``url``: the lab only loads it and reads the database's counters."""

    url: str
    own: ClassVar[bool] = True
    started: ClassVar[bool] = False
    tries_fixes: ClassVar[bool] = False
    runs_gunicorn: ClassVar[bool] = False  # not the lab's to signal, whatever it runs
    ready_path: ClassVar[str | None] = None

    @property
    def path(self) -> str:
        return urlsplit(self.url).path or "/"

    def summary(self, scenario) -> str:
        return f"a running service at {self.url}, clients {scenario.connection}"

    def make(self, scenario, topology, host, url: str, run_dir: Path) -> tuple[Service, dict[str, str]]:
        return RunningService(self.url, client_prefix=topology.client_prefix), {}

    def selector(self, scenario, from_files: bool) -> list[str]:
        return ["--target", self.url]

    def commands(self, scenario, service: Service, env: dict[str, str], topology) -> dict[str, str]:
        return {"target": self.url}

    prints_config: ClassVar[bool] = False
    has_setup: ClassVar[bool] = False
    set_up = LabService.set_up

    @property
    def not_taken(self) -> tuple[str, ...]:
        return NOT_TAKEN_FOR_TARGET

    @property
    def doctor_runs_here(self) -> bool:
        return False  # its host is not this one: the doctor must run there

    @property
    def backends_settle_s(self) -> float:
        return 0.0  # it keeps its pool: its backends are counted as they are

    workers_started = LabService.workers_started
    stack = LabService.stack
    not_applied = LabService.not_applied
    engines = LabService.engines

    def refusal(self, scenario) -> str | None:
        if scenario.pgbouncer.pooled:
            return "pgbouncer places PgBouncer for the lab's own service; a running service has its own"
        return None

    database_of_its_own: ClassVar[bool] = False  # it has its own already, wherever it runs

    def with_app_keys(self, name: str, keys: Mapping[str, Any], root: Path | None) -> RunningTarget:
        if keys:
            raise ServiceKindError(f"scenario {name}: {', '.join(sorted(keys))} cannot apply to a running --target")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"app": None, "target": self.url}


#: What a scenario serves.
ServiceKind = LabService | OwnService | RunningTarget


def shell_line(env: Mapping[str, str], command: Sequence[str]) -> str:
    """A command a user can paste: ``env VAR=value ... command``, passwords masked."""
    assignments = [f"{key}={shlex.quote(mask_password(value))}" for key, value in sorted(env.items())]
    return " ".join(["env", *assignments, *map(shlex.quote, command)])


def _spec(name: str, base: AppSpec | None, keys: Mapping[str, Any], root: Path | None) -> AppSpec:
    """``base`` (or a new spec) with the app keys in ``keys`` applied (``app_dir`` and ``python``
    relative to ``root``)."""
    fields = {"command" if k == "app" else k: v for k, v in keys.items()}
    for key in ("app_dir", "python"):
        if key in fields:
            value = Path(str(fields[key])).expanduser()
            fields[key] = value if value.is_absolute() or root is None else (root / value).resolve()
    try:
        return dataclasses.replace(base, **fields) if base else AppSpec(**fields)
    except (AppSpecError, TypeError) as exc:
        raise ServiceKindError(f"scenario {name}: {exc}") from None


def _shown(path: Path) -> str:
    """``path`` relative to the current directory when it lies below it (a checkout's examples/...)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
