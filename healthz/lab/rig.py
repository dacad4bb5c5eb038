"""The parts of a lab run, made and started: the database, the service on each application host
(ours, the team's command, or a running target), the PgBouncers a scenario places, and the sampler
with its probes. Each function makes one part; the runner enters what it starts in its ExitStack.
"""

from __future__ import annotations

import collections
import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
from sqlalchemy.engine import make_url

from healthz.config import Settings, mask_password
from healthz.db import seed as seed_roles
from healthz.lab import load, probes
from healthz.lab import topology as topologies
from healthz.lab.config import LabError
from healthz.lab.figures import Placement
from healthz.lab.pgbouncer import Console, PgBouncer, login_pattern
from healthz.lab.probes import LineCounter
from healthz.lab.scenarios import Scenario
from healthz.postgres import PostgreSQL, free_port
from healthz.service import Service


@contextlib.contextmanager
def database(cfg, topology) -> Iterator[tuple[str, str, PostgreSQL | None]]:
    """``(service URL, probe DSN, server or None)`` for ``cfg`` (a :class:`LabConfig`): its
    ``--database-url`` checked and seeded, or a throwaway server on ``topology``'s database host,
    removed after."""
    if cfg.database_url:
        url = Settings.from_mapping({"database_url": cfg.database_url}).database_url.replace("+psycopg2", "")
        check_reachable(url)
        if cfg.drives_a_running_service:
            yield url, url, None  # the running service's own tables: the lab only reads counters
            return
        if cfg.seed:
            seed_roles(Settings.from_mapping({"database_url": url}), cfg.roles)
        elif cfg.serves_ours:
            check_seeded(url)
        yield url, url, None  # a team's service alone: its own database, its setup's schema
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


@contextlib.contextmanager
def own_database(
    scenario: Scenario, url: str, pg: PostgreSQL | None, counters: probes.PostgresCounters
) -> Iterator[tuple[str, probes.PostgresCounters]]:
    """The database ``scenario``'s steps use and its counters: for a team's service on the lab's
    throwaway server, an empty one of its own (own name and owner, made afresh for this run, so that
    its setup starts from nothing each time; its sessions and backends counted alone), else ``url``'s."""
    if pg is None or not scenario.service.database_of_its_own:
        yield url, counters
        return
    name = ("app_" + re.sub(r"[^a-z0-9_]", "_", scenario.name.lower()))[:63]
    own = pg.new_database(name)
    own_counters = probes.PostgresCounters(pg.local_dsn("postgres"), name)
    try:
        yield own, own_counters
    finally:
        own_counters.close()


def service(
    scenario: Scenario, topology, host: topologies.AppHost, url: str, run_dir: Path
) -> tuple[Service, dict[str, str]]:
    """An unstarted service for ``scenario`` on application host ``host`` of ``topology``, logging
    into ``run_dir``, and the environment it is given (what its kind makes: see :mod:`healthz.lab.services`)."""
    return scenario.service.make(scenario, topology, host, url, run_dir)


def pgbouncers(scenario: Scenario, topology, url: str) -> tuple[list[PgBouncer], list[str]]:
    """The PgBouncers ``scenario`` places, started (one per application host, or one on the
    database host), and each application host's URL; what was started is stopped on failure."""
    started: list[PgBouncer] = []
    try:
        if scenario.pgbouncer is Placement.DB:
            bouncer, service_url = pgbouncer(scenario, topology, url, topology.db_prefix)
            started.append(bouncer)
            return started, [service_url] * len(topology.hosts)
        urls = []
        for host in topology.hosts:
            bouncer, service_url = pgbouncer(scenario, topology, url, host.prefix)
            started.append(bouncer)
            urls.append(service_url)
        return started, urls
    except BaseException:
        for bouncer in started:
            bouncer.stop()
        raise


def pgbouncer(scenario: Scenario, topology, url: str, prefix: list[str]) -> tuple[PgBouncer, str]:
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


def bypassed(bouncers: list[PgBouncer]) -> str | None:
    """Why the figures would not be PgBouncer's, read once the service answered: no client logged in
    to one of ``bouncers`` (a team's settings that name the database's address themselves), or None."""
    for bouncer in bouncers:
        if not login_pattern(bouncer.database).search(bouncer.logfile.read_bytes()):
            return (
                "pgbouncer did not apply: the service answered without a login to PgBouncer (its settings name "
                "the database's address themselves; take it from DATABASE_URL, PGHOST or {db_host} and {db_port})"
            )
    return None


def locust(cfg, scenario: Scenario, users: int, connection: str, topology, run) -> tuple[list[str], load.Locust]:
    """The step's locust command and its unstarted :class:`load.Locust` for ``run`` (its services'
    URLs, its CSV prefix and folder): alone, over ``--load-processes``, or a master and
    ``--load-workers`` workers spread over ``topology``'s load hosts."""
    # locust's own default port in the client namespace, which is ours alone; any free one on loopback.
    master_port = (5557 if topology.name == "netns" else free_port()) if cfg.load_workers else 0
    command = load.locust_command(
        run.gunicorns[0].base_url,
        users,
        cfg.duration,
        connection=connection,
        max_requests=cfg.max_requests,
        rate=cfg.rate,
        csv_prefix=run.csv_prefix,
        html=run.run_dir / "locust.html",
        stats_interval=cfg.interval,
        targets=[g.base_url for g in run.gunicorns],
        path=scenario.path,
        processes=cfg.load_processes,
        workers=cfg.load_workers,
        master_port=master_port,
    )
    load_hosts = topology.load_hosts()
    workers = [load_hosts[j % len(load_hosts)] for j in range(cfg.load_workers)]
    return command, load.Locust(
        command,
        run.run_dir / "locust.log",
        command_prefix=topology.client_prefix,
        workers=[(load.worker_command(master, master_port), prefix) for prefix, master in workers],
    )


def sampler(
    interval: float,
    counters: probes.PostgresCounters,
    gunicorns: list[Service],
    locust: load.Locust,
    pg: PostgreSQL | None,
    url: str,
    bouncer: PgBouncer | None = None,
    extra=None,
) -> probes.Sampler:
    """The run's sampler, every ``interval`` seconds: sockets toward PostgreSQL's port, and PgBouncer's when the service
    reaches it over TCP (``bouncer``), on every application host; backends by address with
    several hosts."""
    ports = [pg.port if pg else port_of(url)] + ([bouncer.listen_port] if bouncer else [])
    return probes.Sampler(
        counters,
        db_port=ports,
        netns_pid=[(lambda g=g: g.pid) for g in gunicorns],
        interval=interval,
        extra=extra,
        by_address=len(gunicorns) > 1,
        cpu_pids={
            "gunicorn": lambda: [g.pid for g in gunicorns],
            "postgres": lambda: pg.process.pid if pg and pg.process else None,
            "locust": lambda: locust.pid if locust.running() else None,
        },
    )


def extra_probe(scenario: Scenario, bouncers: list[PgBouncer], pg: PostgreSQL | None, first_host):
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


def pool_totals(services: list[Service]) -> dict[str, float]:
    """:func:`probes.pool_totals` of every service's ``/metrics``, summed (none from a service without it)."""
    total: dict[str, float] = {}
    for service in services:
        status, body = service.get("/metrics", timeout=5)
        for key, value in (probes.pool_totals(body) if status == 200 else {}).items():
            total[key] = total.get(key, 0.0) + value
    return total


def port_of(url: str) -> int:
    return urlsplit(url).port or 5432


def check_reachable(url: str) -> None:
    try:
        psycopg2.connect(url, connect_timeout=5).close()
    except psycopg2.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LabError(f"--database-url {mask_password(url)} is not reachable: {mask_password(first)}") from None


def check_seeded(url: str) -> None:
    with contextlib.closing(psycopg2.connect(url, connect_timeout=5)) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('role') IS NOT NULL")
        if not cur.fetchone()[0]:
            raise LabError(
                f"--database-url {mask_password(url)} has no table role: pass --seed to create and seed it (the only write the lab makes)"
            )
