"""What a lab run writes about itself besides its figures: the run's metadata (the command, the
config, the topology, PostgreSQL, the machine and the versions), and for each step the commands
that repeat it (``commands.txt``: the ``healthz lab run`` rerun, the service, locust and its
workers) and gunicorn's resolved settings (``gunicorn-config.txt``, printed beside the service's
start), passwords masked.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

from healthz import versions
from healthz.config import mask_password
from healthz.harness import store
from healthz.lab import measure, probes
from healthz.lab.config import LabConfig
from healthz.lab.scenarios import Scenario
from healthz.postgres import PostgreSQL
from healthz.service import Service, gunicorn_command


#: What the lab cannot measure of a service it does not run (``--target``): it lives on another host.
class Record:
    """The records of the lab run ``config`` describes (see the module docstring)."""

    def __init__(self, config: LabConfig) -> None:
        self.config = config
        # gunicorn --print-config by environment: a second of gunicorn's imports, run beside the service's start.
        self._configs: dict[str, concurrent.futures.Future[str]] = {}
        self._printer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="print-config")
        self._config_files: list[tuple[Path, concurrent.futures.Future[str]]] = []

    def meta(
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

    def rerun_command(self, scenario: Scenario, users: int, connection: str) -> str:
        """The ``healthz lab run`` command that repeats one run (password masked)."""
        cfg = self.config
        args = [
            "healthz",
            "lab",
            "run",
            "--topology",
            cfg.topology,
            *self.selector(scenario),
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

    def selector(self, scenario: Scenario) -> list[str]:
        """The options that choose ``scenario`` again: ``--target``, ``--app`` (and ``--path``), or ``--scenario``."""
        return scenario.service.selector(scenario, from_files=bool(self.config.scenarios_files))

    def commands(
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
        service = scenario.service.commands(scenario, server, env, topology)
        commands = {"rerun": rerun, **service, "locust": shlex.join([*topology.client_prefix, *locust_cmd])}
        for i, worker in enumerate(workers or [], 1):
            commands[f"locust worker {i}"] = shlex.join(worker)
        (run_dir / "commands.txt").write_text("\n\n".join(f"# {k}\n{v}" for k, v in commands.items()) + "\n")
        if not scenario.service.prints_config:
            return commands
        key = json.dumps(env, sort_keys=True)
        if key not in self._configs:
            self._configs[key] = self._printer.submit(_print_config, scenario, env)
        self._config_files.append((run_dir / "gunicorn-config.txt", self._configs[key]))
        return commands

    def identity(self, run, topology) -> dict[str, Any]:
        """What one step (``run``, the runner's) ran: the scenario, the step, where its files are and
        the commands that repeat it."""
        scenario = run.scenario
        commands = self.commands(
            scenario,
            run.gunicorns[0],
            run.env,
            topology,
            run.locust_cmd,
            run.run_dir,
            self.rerun_command(scenario, run.users, run.connection),
            run.locust.worker_commands,
        )
        pgbouncer = measure.pgbouncer_identity(run.scenario, len(run.bouncers)) if scenario.pgbouncer.pooled else None
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
            "not_taken": list(scenario.service.not_taken),
            "counterpart": scenario.counterpart,
            "fix": dict(scenario.fix) if scenario.fix else None,
            "tcp_tw_reuse": topology.tcp_tw_reuse,
            "commands": commands,
            "error": None,
            "pgbouncer": pgbouncer,
        }

    def write_configs(self) -> None:
        """Write each ``gunicorn-config.txt`` whose ``--print-config`` was started by :meth:`commands`."""
        while self._config_files:
            path, printed = self._config_files.pop()
            path.write_text(printed.result())


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
