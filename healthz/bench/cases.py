"""What the benchmark measures: each worker class with each pool, a few variants of the sized
pool, and the load it puts on them. Cases are lab scenarios (:class:`healthz.lab.scenarios.Scenario`),
so they read and validate as the lab's do."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from healthz.config import WORKER_CLASSES
from healthz.lab.figures import fields_of
from healthz.lab.scenarios import Scenario

#: Pools by key: the issue's sized pool (no overflow), SQLAlchemy's defaults, and no pool at all.
POOLS: dict[str, dict[str, object]] = {
    "queuepool-sized": {"pool_class": "QueuePool", "pool_size": 5, "max_overflow": 0},
    "queuepool-default": {"pool_class": "QueuePool", "pool_size": 5, "max_overflow": 10},
    "nullpool": {"pool_class": "NullPool"},
}
SIZED = "queuepool-sized"
#: The pool the others are measured against (healthz/NullPool).
UNPOOLED = "nullpool"
#: Variants of eventlet with the sized pool: each changes one setting, to show what it costs.
VARIANTS: dict[str, tuple[dict[str, object], str]] = {
    "metrics-off": ({"metrics": False}, "no Prometheus metrics: what the metrics cost"),
    "green-driver-off": ({"green_driver": "off"}, "psycopg2 blocks the worker for each query (no wait callback)"),
    "read-committed": (
        {"isolation_level": "READ COMMITTED"},
        "the count inside BEGIN ... ROLLBACK: SQLAlchemy's default",
    ),
}
#: The sized pool on psycopg 3, per worker class that can run it (not eventlet, which it does not support).
DRIVER_VARIANTS: dict[str, tuple[dict[str, object], str]] = {
    "psycopg": ({"driver": "psycopg"}, "psycopg 3 (SQLAlchemy's postgresql+psycopg) in place of psycopg2"),
}
#: The worker class the targets are judged on: the report's.
TARGET_WORKER = "eventlet"


@dataclasses.dataclass(frozen=True)
class Case:
    """One service configuration to measure. ``pool`` is a :data:`POOLS` key, ``variant`` a
    :data:`VARIANTS` key or ``""``; ``ceiling`` says whether ``/api/v1/livez/`` is measured on
    this service too (once per worker class is enough: livez never touches the pool)."""

    scenario: Scenario
    pool: str
    variant: str = ""
    ceiling: bool = False

    @property
    def name(self) -> str:
        return self.scenario.name

    @property
    def worker_class(self) -> str:
        return self.scenario.worker_class


def make_case(
    worker_class: str, pool: str, variant: str = "", *, ceiling: bool = False, worker_connections: int = 1000
) -> Case:
    """The case for ``worker_class`` with pool ``pool`` (and ``variant``); ValueError names the
    accepted values of a wrong one."""
    if worker_class not in WORKER_CLASSES:
        raise ValueError(f"worker class {worker_class!r} is not one of {', '.join(WORKER_CLASSES)}")
    if pool not in POOLS:
        raise ValueError(f"pool {pool!r} is not one of {', '.join(POOLS)}")
    known = {**VARIANTS, **DRIVER_VARIANTS}
    if variant and variant not in known:
        raise ValueError(f"variant {variant!r} is not one of {', '.join(known)}")
    settings = dict(POOLS[pool])
    description = f"{worker_class} with {pool}"
    if variant:
        changes, why = known[variant]
        settings.update(changes)
        description += f", {variant}: {why}"
    name = "-".join(part for part in (worker_class, pool, variant) if part)
    scenario = Scenario(
        name,
        description,
        worker_class,
        settings=settings,
        worker_connections=worker_connections,
        connection="keep-alive",
    )
    return Case(scenario, pool, variant, ceiling)


def default_cases(
    worker_classes: tuple[str, ...] = WORKER_CLASSES,
    pools: tuple[str, ...] = tuple(POOLS),
    variants: tuple[str, ...] = (*VARIANTS, *DRIVER_VARIANTS),
) -> list[Case]:
    """Every worker class with every pool (the ceiling measured beside the first pool of each),
    then the variants of the target worker's sized pool when both are in the run, then the sized
    pool on psycopg 3 for each worker class that runs it."""
    cases = [make_case(w, p, ceiling=(i == 0)) for w in worker_classes for i, p in enumerate(pools)]
    if TARGET_WORKER in worker_classes and SIZED in pools:
        cases += [make_case(TARGET_WORKER, SIZED, v) for v in variants if v in VARIANTS]
    if SIZED in pools and "psycopg" in variants:
        cases += [make_case(w, SIZED, "psycopg") for w in worker_classes if w != "eventlet"]
    return cases


def crowd_case(connections: int, fair: bool = True) -> Case:
    """The target worker with the sized pool, with greenlets enough for ``connections`` clients
    in one worker (gunicorn does not balance connections between workers); ``fair=False`` takes
    the first-come, first-served gate away (``pool_fair=off``: QueuePool's own wakeups)."""
    case = make_case(TARGET_WORKER, SIZED, worker_connections=max(1000, connections))
    if fair:
        return case
    scenario = case.scenario.with_changes(f"{case.name}-unfair", {"pool_fair": False})
    return dataclasses.replace(case, scenario=scenario, variant="unfair")


@dataclasses.dataclass(frozen=True)
class CaseFigures:
    """What one case measured, as ``bench.json`` holds it under ``cases`` and is read back from it.

    ``healthz`` and ``livez`` are the wrk runs' series (:func:`healthz.bench.readings.runs_summary`);
    ``statements`` what PostgreSQL ran for ``requests`` health checks sent one at a time;
    ``cpu_us_per_request`` the CPU microseconds per response of the service and of PostgreSQL; ``livez``
    and its CPU only for a ceiling case (None otherwise, and then left out of the file)."""

    name: str
    worker_class: str
    pool: str
    variant: str
    healthz: dict[str, Any]
    statements: dict[str, Any]
    sessions_opened: int
    summary: str = ""
    cpu_us_per_request: dict[str, float] = dataclasses.field(default_factory=dict)
    sessions_per_1000_requests: float | None = None
    rss_mib_per_worker: list[float] = dataclasses.field(default_factory=list)
    worker_restarts: int | None = None
    livez: dict[str, Any] | None = None
    livez_cpu_us_per_request: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {k: v for k, v in data.items() if not (k.startswith("livez") and v is None)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], strict: bool = False) -> CaseFigures:
        """Read back from ``bench.json``; ``strict``: a key that is not a field is an error."""
        return cls(**fields_of(cls, data, strict=strict))


def measured_cases(results: Mapping[str, Any]) -> list[CaseFigures]:
    """The cases of a bench result (``bench.json`` or :meth:`Bench.run`'s), typed."""
    return [CaseFigures.from_dict(c) for c in results.get("cases", [])]


def measured_case(results: Mapping[str, Any], name: str) -> CaseFigures | None:
    """The case called ``name``, or None when the run did not measure it."""
    return next((c for c in measured_cases(results) if c.name == name), None)
