"""The fixes the lab tries on a team's own code (``try_fixes``), chosen from the stack it read and
sized by the load its code carried as it is. Pure: what ran goes in, the plan comes out.

Per framework:

* Django: ``CONN_MAX_AGE=600`` as it is (the report's first try), gthread with ``CONN_MAX_AGE``
  (what the report found working), Django 5.1+'s pool where the venv has Django 5.1+ and psycopg 3
  with psycopg-pool (else what to install is said);
* SQLAlchemy and Flask-SQLAlchemy: a bounded pool sized for the load (``max_overflow=0``), and the
  same under gthread;
* Django also: PgBouncer on the application host (its Unix socket, a transaction pool sized for the
  load) in front of the code as it is: pooling alone, without a setting of theirs changed but for
  ``DISABLE_SERVER_SIDE_CURSORS`` (transaction pooling needs it);
* every framework: ``tcp_tw_reuse=1`` in ``netns``, the knob that moves the limit, not the cost: it is
  measured and said, never the answer.

Each fix is laid over the unchanged code from outside (:mod:`healthz.lab.overlays`) and runs at the
lowest step where the code as it is failed or was at risk, and at the next step asked above it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from healthz.lab import advice, verdict
from healthz.lab.figures import RunFigures
from healthz.lab.scenarios import Scenario
from healthz.lab.stack import Stack
from healthz.plan import DatabaseLimits

#: What each fix changes: a setting, the worker class, a kernel knob, a pooler beside the service.
#: (Numbered as first stored; :data:`ORDER` is smallest change first.)
SETTING, WORKER_CLASS, KNOB, POOLER = 1, 2, 3, 4
#: The fixes' ranks, smallest change first: a setting, then a pooler (pooling alone still), then
#: the worker class (the code's concurrency changes); a knob is never the answer.
ORDER = (SETTING, POOLER, WORKER_CLASS, KNOB)
#: CONN_MAX_AGE of the persistent-connection fixes (the report's value).
CONN_MAX_AGE = 600
#: Seconds a request waits for a connection of a bounded pool before it fails (SQLAlchemy's and Django's pool).
POOL_TIMEOUT = 10
#: Frameworks the lab has fixes for.
FRAMEWORKS = ("Django", "Flask-SQLAlchemy", "SQLAlchemy", "Flask")


@dataclasses.dataclass(frozen=True)
class Fix:
    """One change to a team's service: the scenario keys that lay it over their code, what it is in
    a phrase (``title``), and how big a change it is (``rank``: :data:`SETTING` < :data:`WORKER_CLASS`
    < :data:`KNOB`). A knob moves the limit, not the cost: it is never the answer."""

    name: str
    title: str
    rank: int
    keys: Mapping[str, Any]

    @property
    def knob(self) -> bool:
        return self.rank == KNOB

    @property
    def pooling(self) -> bool:
        """Whether it is pooling alone: a setting of the code's connections, or a pooler in front."""
        return self.rank in (SETTING, POOLER)

    @property
    def size(self) -> int:
        """How big a change it is (:data:`ORDER`): the answer is the smallest that held."""
        return ORDER.index(self.rank)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "rank": self.rank, "keys": dict(self.keys)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fix:
        return cls(str(data["name"]), str(data["title"]), int(data["rank"]), dict(data["keys"]))


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A fix not tried, and why (what to install, or where it cannot be measured)."""

    title: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"title": self.title, "reason": self.reason}


@dataclasses.dataclass(frozen=True)
class FixPlan:
    """What the lab tries after the steps as it is: ``fixes`` at ``steps``, ``skipped`` with their
    reasons, sized by ``sizing`` (None when nothing needs fixing or nothing was measured); ``why``
    says why no fix runs when ``steps`` is empty."""

    scenario: str
    framework: str
    steps: tuple[int, ...]
    fixes: tuple[Fix, ...]
    skipped: tuple[Skipped, ...]
    sizing: str | None
    pool_size: int | None
    why: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "framework": self.framework,
            "steps": list(self.steps),
            "fixes": [f.to_dict() for f in self.fixes],
            "skipped": [s.to_dict() for s in self.skipped],
            "sizing": self.sizing,
            "pool_size": self.pool_size,
            "why": self.why,
        }


def _version(text: str | None) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text or "")[:3])


def fix_steps(asked: Sequence[int], as_is: Sequence[RunFigures], limits: DatabaseLimits | None) -> tuple[int, ...]:
    """The lowest step where the code as it is failed or was at risk, and the next step asked above
    it; none when it held at every step (each step judged alone, as the verdict judges a scenario)."""
    steps = sorted(set(asked))
    for run in sorted(verdict.measured(as_is), key=lambda r: r.concurrency):
        if verdict.judge(run.scenario, [run], limits).outcome in (verdict.Outcome.FAILED, verdict.Outcome.AT_RISK):
            above = [s for s in steps if s > run.concurrency]
            return (run.concurrency, *above[:1])
    return ()


def sized(run: RunFigures, stack: Stack | None, limits: DatabaseLimits | None, db_cores: int | None) -> advice.Sizing:
    """The pool ``run``'s load needs per worker, with the workers and worker class gunicorn really
    resolved for the team's command (the scenario's declared ones otherwise). Django holds its
    connection for the whole request, idle between autocommit statements where pg_stat_activity
    does not count it: its hold is the request's latency (an upper bound)."""
    g = (stack.gunicorn if stack else None) or {}
    if stack and stack.framework == "Django":
        run = dataclasses.replace(run, in_use_mean=None)
    worker_class = str(g.get("worker_class", run.worker_class)).rsplit(".", 1)[-1].lower().removesuffix("worker")
    per_worker = {"gthread": g.get("threads"), "sync": 1}.get(worker_class, g.get("worker_connections"))
    run = dataclasses.replace(
        run,
        workers=int(g.get("workers") or run.workers),
        worker_class=worker_class,
        worker_concurrency=int(per_worker or run.worker_concurrency or 1),
    )
    return advice.size(run, limits, db_cores)


def _sizing_run(as_is: Sequence[RunFigures]) -> RunFigures | None:
    """The step whose load sizes the pool: the most successful requests per second as it is."""
    done = verdict.measured(as_is)
    return max(done, key=lambda r: (r.rps or 0) * (1 - (r.error_rate or 0)), default=None)


def candidates(
    stack: Stack, pool_size: int, topology: str, server_pool_size: int | None = None
) -> tuple[list[Fix], list[Skipped]]:
    """The fixes for ``stack``'s framework with pools of ``pool_size`` per worker (and a PgBouncer
    of ``server_pool_size`` server connections, default ``pool_size``), and those it skips."""
    gthread_args = f"--worker-class gthread --threads {pool_size}"
    if stack.framework == "Django":
        fixes, skipped, gthread = _django(stack, pool_size, gthread_args)
        fixes.append(pgbouncer(server_pool_size or pool_size))
    elif stack.framework in ("Flask-SQLAlchemy", "SQLAlchemy") or "sqlalchemy" in stack.imports:
        bounded = {"pool_size": pool_size, "max_overflow": 0, "pool_timeout": POOL_TIMEOUT}
        title = f"pool_size={pool_size}, max_overflow=0"
        fixes, skipped = [Fix("sqlalchemy-pool", title, SETTING, {"sqlalchemy_pool": bounded})], []
        gthread = Fix(
            "gthread-sqlalchemy-pool",
            f"gthread, {pool_size} threads, {title}",
            WORKER_CLASS,
            {"gunicorn_args": gthread_args, "sqlalchemy_pool": bounded},
        )
    else:
        return [], [Skipped("every fix", f"framework {stack.framework}: the lab has fixes for {', '.join(FRAMEWORKS)}")]
    gunicorn = stack.gunicorn or {}
    if not gunicorn:
        skipped.append(Skipped(gthread.title, "the command is not gunicorn's: its worker class cannot be laid over"))
    elif "gthread" in str(gunicorn.get("worker_class", "")).lower():
        skipped.append(Skipped(gthread.title, "it runs gthread already"))
    else:
        fixes.append(gthread)
    if topology == "netns":
        fixes.append(Fix("tcp-tw-reuse", "net.ipv4.tcp_tw_reuse=1", KNOB, {"tcp_tw_reuse": 1}))
    else:
        why = "loopback: Linux reuses TIME_WAIT ports on 127.0.0.1 already; --topology netns (root) measures it"
        skipped.append(Skipped("net.ipv4.tcp_tw_reuse=1", why))
    return fixes, skipped


def _django(stack: Stack, pool_size: int, gthread_args: str) -> tuple[list[Fix], list[Skipped], Fix]:
    """Django's fixes: persistent connections as it is, its own pool, gthread with persistent connections."""
    fixes: list[Fix] = []
    skipped: list[Skipped] = []
    django = stack.django or {}
    health = {"CONN_HEALTH_CHECKS": True} if _version(stack.packages.get("django")) >= (4, 1) else {}
    persistent = {"CONN_MAX_AGE": CONN_MAX_AGE, **health}
    if django.get("conn_max_age") in (0, "0"):
        fixes.append(Fix("conn-max-age", f"CONN_MAX_AGE={CONN_MAX_AGE}", SETTING, {"django_databases": persistent}))
    else:
        why = f"it runs with CONN_MAX_AGE={django.get('conn_max_age')} already"
        skipped.append(Skipped(f"CONN_MAX_AGE={CONN_MAX_AGE}", why))
    title = f"Django's pool (max_size={pool_size})"
    missing = _django_pool_missing(stack)
    if missing:
        skipped.append(Skipped(title, missing))
    else:
        pool = {"CONN_MAX_AGE": 0, "OPTIONS": {"pool": {"min_size": 1, "max_size": pool_size, "timeout": POOL_TIMEOUT}}}
        fixes.append(Fix("django-pool", title, SETTING, {"django_databases": pool}))
    gthread = Fix(
        "gthread-conn-max-age",
        f"gthread, {pool_size} threads, CONN_MAX_AGE={CONN_MAX_AGE}",
        WORKER_CLASS,
        {"gunicorn_args": gthread_args, "django_databases": persistent},
    )
    return fixes, skipped, gthread


def pgbouncer(pool_size: int) -> Fix:
    """PgBouncer on the application host in front of the code as it is: its Unix socket (no TCP port
    per connection), a transaction pool of ``pool_size`` server connections."""
    return Fix(
        "pgbouncer",
        f"PgBouncer on the app host (Unix socket, transaction pool of {pool_size})",
        POOLER,
        {
            "pgbouncer": "app-unix",
            "pgbouncer_pool_mode": "transaction",
            "pgbouncer_pool_size": pool_size,
            # Django's server-side cursors (.iterator()) need session pooling: off, as Django's docs say.
            "django_databases": {"DISABLE_SERVER_SIDE_CURSORS": True},
        },
    )


def _django_pool_missing(stack: Stack) -> str | None:
    """What the venv lacks for Django 5.1+'s pool, as the command that installs it; None when it has it."""
    django = stack.packages.get("django")
    has = [f"Django {django}" if django else "no Django"]
    has += [f"{name} {stack.packages[name]}" for name in ("psycopg2", "psycopg2-binary") if name in stack.packages]
    ok_django = _version(django) >= (5, 1)
    ok_psycopg = _version(stack.packages.get("psycopg")) >= (3,) and "psycopg-pool" in stack.packages
    if ok_django and ok_psycopg and (stack.django or {}).get("driver") == "psycopg2":
        return "needs psycopg 3, which this venv has but its settings keep from Django (it runs psycopg2)"
    if ok_django and ok_psycopg:
        return None
    need = ([] if ok_django else ["'django>=5.1'"]) + ([] if ok_psycopg else ["'psycopg[binary,pool]'"])
    return (
        f"needs Django 5.1+ with psycopg 3 and psycopg-pool (this venv: {', '.join(has)}): pip install {' '.join(need)}"
    )


def plan(
    scenario: str,
    asked: Sequence[int],
    as_is: Sequence[RunFigures],
    stack: Stack | None,
    limits: DatabaseLimits | None,
    db_cores: int | None,
    topology: str,
) -> FixPlan:
    """The fixes to try on ``scenario``'s code after its steps ``as_is``, at which steps, sized by its load."""
    framework = stack.framework if stack else "unknown"
    steps = fix_steps(asked, as_is, limits)
    base = _sizing_run(as_is)
    if stack is None or base is None:
        why = "it was not measured as it is" if base is None else "its stack could not be read"
        return FixPlan(scenario, framework, (), (), (), None, None, why)
    if not steps:
        return FixPlan(scenario, framework, (), (), (), None, None, "it held at every step as it is")
    sizing = sized(base, stack, limits, db_cores)
    fixes, skipped = candidates(stack, sizing.pool_size, topology, sizing.server_pool_size)
    why = None if fixes else (skipped[0].reason if skipped else "no fix applies to it")
    return FixPlan(
        scenario, framework, steps if fixes else (), tuple(fixes), tuple(skipped), sizing.line(), sizing.pool_size, why
    )


def runs(plan: FixPlan, base: Scenario) -> list[tuple[Scenario, int]]:
    """Each fix of ``plan`` laid over ``base`` at each of its steps, in turn."""
    return [(scenario_for(base, fix), users) for fix in plan.fixes for users in plan.steps]


def scenario_for(base: Scenario, fix: Fix) -> Scenario:
    """``base`` (the team's code as it is) with ``fix`` laid over it, named ``<base>+<fix>``."""
    fixed = base.with_changes(
        f"{base.name}+{fix.name}", {**fix.keys, "try_fixes": False, "description": f"{base.name} with {fix.title}"}
    )
    # Its stand-in stands for the code as it is, not for a fix laid over it.
    return dataclasses.replace(fixed, fix={**fix.to_dict(), "of": base.name}, counterpart=None)
