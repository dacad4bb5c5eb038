"""What one ``healthz lab run`` is asked to do, checked once: :class:`LabConfig`; where its results
go (:func:`default_output`), and the folder name of each run (:func:`slug`)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from healthz.config import mask_password
from healthz.harness import store
from healthz.lab.scenarios import Scenario


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
    def serves_ours(self) -> bool:
        """Whether any scenario runs the lab's own service (which needs its ``role`` table)."""
        return any(not s.own_service for s in self.scenarios)

    @property
    def drives_a_running_service(self) -> bool:
        """``--target``: the service runs elsewhere; the lab starts none and only reads the database."""
        return any(not s.service.started for s in self.scenarios)

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
