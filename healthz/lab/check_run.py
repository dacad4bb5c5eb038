"""A check run: :class:`~healthz.lab.check.CheckOptions` as one lab step (the team's command as an
own service, one concurrency, no doctor), its figures judged into a
:class:`~healthz.lab.check.CheckResult`, with the lines of the service's log that matter when it
failed. Everything it started is stopped, and its files are removed unless an output folder was given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import shutil
import tempfile
import time
from pathlib import Path

from healthz.config import mask_password
from healthz.lab import overlays
from healthz.lab.check import CheckError, CheckOptions, CheckResult, result_of
from healthz.lab.config import LabConfig, LabError
from healthz.lab.own_service import AppSpec, AppSpecError
from healthz.lab.runner import Lab, Progress
from healthz.lab.scenarios import UNKNOWN, Scenario, ScenarioError
from healthz.lab.services import OwnService
from healthz.lab.topology import TopologyError
from healthz.postgres import PostgresError

#: Log lines worth a reader's eye when a check fails: errors and their causes, in any framework's words.
_MATTERS = re.compile(
    r"\berror\b|exception|traceback|fatal|critical|refused|could not|\btimeout\b|timed out|denied", re.IGNORECASE
)


def scenario_of(options: CheckOptions) -> Scenario:
    """The lab scenario that runs ``options.app`` as a team's own service."""
    try:
        spec = AppSpec(
            options.app,
            app_dir=options.app_dir.resolve() if options.app_dir else Path.cwd(),
            env=dict(options.env),
            setup=options.setup,
            path=options.path,
            ready_path=options.ready_path,
            python=options.python.resolve() if options.python else None,
            ready_timeout=options.ready_timeout,
            sqlalchemy_pool=options.sqlalchemy_pool,
        )
        return Scenario(
            "check", f"own service: {options.app}", UNKNOWN, service=OwnService(spec), connection=options.connection
        )
    except (AppSpecError, ScenarioError) as exc:
        raise CheckError(str(exc).removeprefix("scenario check: ")) from None


def config_of(options: CheckOptions, output: Path, command_line: str = "") -> LabConfig:
    """The lab configuration of one check step writing into ``output``."""
    try:
        return LabConfig(
            scenarios=[scenario_of(options)],
            concurrency=[options.clients],
            output=output,
            duration=options.seconds,
            max_requests=options.bounded_requests,
            rate=float(options.rate or 0.0),
            topology=options.topology,
            database_url=options.database_url,
            doctor=False,
            command_line=command_line,
        )
    except LabError as exc:
        raise CheckError(str(exc)) from None


def log_lines(text: str, limit: int = 30) -> str:
    """The lines of a service log that say what went wrong: those naming an error (the last
    ``limit``), or its last lines when none does; passwords masked."""
    lines = [mask_password(line) for line in text.splitlines() if line.strip()]
    chosen = [line for line in lines if _MATTERS.search(line)] or lines
    return "\n".join(chosen[-limit:])


def run_check(options: CheckOptions, output: Path | None = None, command_line: str = "") -> CheckResult:
    """Run the check; its result, with the service log's lines that matter when it did not hold.
    ``output`` keeps the run's files there (else a temporary folder, removed after)."""
    folder = output or Path(tempfile.mkdtemp(prefix="healthz-check-"))
    try:  # the temporary folder goes on every exit, a refusal's included
        config = config_of(options, folder, command_line)
        started = time.monotonic()
        common = {"app": options.app, "topology": config.topology, "clients": options.clients, "budget": options.budget}
        try:
            lab = Lab(config, Progress(io.StringIO()))
            (figures,) = lab.run()
        except (LabError, TopologyError, PostgresError) as exc:
            return CheckResult(**common, error=mask_password(str(exc)).splitlines()[0])
        result = result_of(options, figures, config.topology)
        excerpt = ""
        if not result.passed:
            with contextlib.suppress(OSError):
                run_dir = folder / figures.run_dir
                excerpt = log_lines((run_dir / "service.log").read_text(errors="replace"))
        kept = str(folder) if output else None
        seconds = round(time.monotonic() - started, 1)
        stack = lab.meta.get("stacks", {}).get("check")
        made = overlays.engines(folder / figures.run_dir / "overlay")
        return dataclasses.replace(result, wall_seconds=seconds, output=kept, log=excerpt, stack=stack, engines=made)
    finally:
        if output is None:
            shutil.rmtree(folder, ignore_errors=True)
