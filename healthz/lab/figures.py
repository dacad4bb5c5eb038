"""The lab's vocabulary as types: where PgBouncer sits, a pool's shape, the database's limits.

Each is small, immutable and JSON-able (``to_dict`` / ``from_dict``), so ``results.json`` holds
what the runner measured and the verdict and the report read it back as the same types, never by
parsing a sentence the lab wrote.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any


class Placement(str, enum.Enum):
    """Where a scenario's PgBouncer sits, if anywhere.

    ``APP``: on the application host, reached over TCP on 127.0.0.1; ``APP_UNIX``: the same over
    its Unix socket; ``DB``: on the database host, reached over the network like PostgreSQL.
    """

    NONE = "none"
    APP = "app"
    APP_UNIX = "app-unix"
    DB = "db"

    def __str__(self) -> str:  # the value, as in a scenario file, on every Python
        return self.value

    @classmethod
    def parse(cls, value: str | Placement) -> Placement:
        """The placement named ``value``; ValueError naming the accepted ones."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"pgbouncer {value!r} is not one of {', '.join(p.value for p in cls)}") from None

    @property
    def pooled(self) -> bool:
        """Whether a PgBouncer runs at all."""
        return self is not Placement.NONE

    @property
    def transport(self) -> str:
        """How the service reaches its database endpoint: ``unix`` through PgBouncer's socket, else ``tcp``."""
        return "unix" if self is Placement.APP_UNIX else "tcp"

    @property
    def on_app_host(self) -> bool:
        """One PgBouncer per application host (its pool multiplies with the hosts)."""
        return self in (Placement.APP, Placement.APP_UNIX)

    @property
    def crosses_network(self) -> bool:
        """Whether the service's own connections (one per request without a pool) cross the network,
        each leaving a TIME_WAIT port that loopback's reuse does not give back."""
        return self in (Placement.NONE, Placement.DB)

    @property
    def where(self) -> str:
        """Where it sits, in a phrase for a table."""
        return {
            Placement.NONE: "no PgBouncer",
            Placement.APP: "app host, 127.0.0.1",
            Placement.APP_UNIX: "app host, Unix socket",
            Placement.DB: "database host",
        }[self]

    def service_url(self, tcp_url: str, unix_url: str) -> str:
        """The URL the service is handed for a PgBouncer listening on both."""
        return unix_url if self is Placement.APP_UNIX else tcp_url


@dataclasses.dataclass(frozen=True)
class DatabaseLimits:
    """PostgreSQL's connection limits: ``max_connections`` less the slots reserved for superusers
    (and, on 16+, ``reserved_connections``) is what clients such as the service can take."""

    max_connections: int
    reserved: int = 0

    @property
    def available(self) -> int:
        """Connections left for ordinary clients (never below 0)."""
        return max(0, self.max_connections - self.reserved)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> DatabaseLimits | None:
        """The limits a lab run recorded (``meta["postgres"]``), or None when it recorded none."""
        pg = meta.get("postgres") or {}
        if not pg.get("max_connections"):
            return None
        return cls(int(pg["max_connections"]), int(pg.get("superuser_reserved_connections") or 0))


@dataclasses.dataclass(frozen=True)
class PoolShape:
    """A worker's pool as configured: its class, ``pool_size`` and ``max_overflow``.

    ``capacity`` is the most connections it holds at once, None when unbounded (NullPool,
    SingletonThreadPool, which opens one per thread or greenlet, and ``max_overflow=-1``).
    """

    pool_class: str
    pool_size: int
    max_overflow: int

    @property
    def capacity(self) -> int | None:
        if self.pool_class == "QueuePool" and self.max_overflow >= 0:
            return self.pool_size + self.max_overflow
        return None

    @property
    def bounded(self) -> bool:
        """A QueuePool with ``max_overflow=0``: it opens ``pool_size`` connections and reuses them
        (overflow connections are closed on check-in, so any overflow churns)."""
        return self.pool_class == "QueuePool" and self.max_overflow == 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PoolShape:
        return cls(str(data["pool_class"]), int(data["pool_size"]), int(data["max_overflow"]))
