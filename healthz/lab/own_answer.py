"""The answer for a team's own code (``try_fixes``): how its code fared as it is, which fix held on
it, the change to paste in its framework's words and the scenario file that reruns it. Pure: it
reads a run's ``results.json`` (:class:`RunFigures` and the metadata) and judges nothing new.

The answer is the fix that held at every step it ran with margin (its requests per second within
:data:`advice.MARGIN` of the fastest that held) and is the smallest change from what the team runs:
a setting before a worker class; a kernel knob moves the limit, not the cost, and is never the answer.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from healthz.config import mask_password
from healthz.lab import advice, verdict
from healthz.lab.figures import Placement, RunFigures, top
from healthz.lab.fixes import Fix
from healthz.lab.snippets import PROXY_NOTE, Snippet, pgbouncer_ini, proxy_lines
from healthz.plan import DatabaseLimits

_n, _pct = verdict.number, verdict.percent


class OwnReply(str, enum.Enum):
    FIXED = "fixed"  # a fix that is a pool setting held
    NOT_POOLING_ALONE = "not pooling alone"  # only a fix that changes the worker class held
    NOT_FIXED = "not fixed"  # no fix tried held
    HELD_AS_IS = "held as it is"
    NOT_TRIED = "not tried"  # no fix applies, or nothing to size it by

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class Tried:
    """One fix as it ran on the team's code: its outcome over its steps and its top step."""

    fix: Fix
    verdict: verdict.Verdict
    runs: tuple[RunFigures, ...]

    @property
    def held(self) -> bool:
        return self.verdict.outcome is verdict.Outcome.HELD

    def line(self) -> str:
        r = top(self.runs) if self.runs else None
        if r is None or self.verdict.worst is None:
            return f"{self.fix.title}: not measured ({self.verdict.error})"
        steps = " and ".join(f"{x.concurrency:,}" for x in self.runs)
        return (
            f"{self.fix.title}: {_outcome(self.verdict)} at {steps} clients, {_n(r.sessions_per_request, 3)} sessions per request "
            f"({r.sessions_opened:,} in {_n(r.seconds)} s), {_n(r.rps)} req/s, p99 {_n(r.p99_ms)} ms"
        )


@dataclasses.dataclass(frozen=True)
class OwnAnswer:
    """The answer for one own scenario that tried fixes."""

    scenario: str
    project: str
    framework: str
    reply: OwnReply
    as_is: verdict.Verdict
    failed_at: verdict.Verdict | None  # the lowest step where it failed or was at risk as it is, judged alone
    chosen: Tried | None
    tried: tuple[Tried, ...]
    skipped: tuple[dict[str, str], ...]
    sizing: str | None
    why: str | None
    app: Mapping[str, Any]

    def headline(self) -> str:
        q = f"Does pooling alone fix it for {self.project}?"
        if self.reply is OwnReply.FIXED:
            return f"{q} Yes: {self.chosen.fix.title} held on your code where it {self._as_is_word()} as it is."
        if self.reply is OwnReply.NOT_POOLING_ALONE:
            return (
                f"{q} Not pooling alone: {self.chosen.fix.title}, a worker class change, held on your code where "
                f"it {self._as_is_word()} as it is; no setting tried alone held."
            )
        if self.reply is OwnReply.NOT_FIXED:
            return f"{q} No: none of the fixes tried held on your code ({', '.join(t.fix.title for t in self.tried)})."
        if self.reply is OwnReply.HELD_AS_IS:
            return f"{self.project} held at every step as it is ({self.framework}): no fix was needed."
        return f"{self.project} ran as it is only: no fix was tried, as {self.why}."

    def _as_is_word(self) -> str:
        judged = self.failed_at or self.as_is
        return "failed" if judged.outcome is verdict.Outcome.FAILED else "was at risk"

    def as_is_line(self) -> str:
        """How the code fared as it is: at the first step that failed or was at risk, and its worst
        step too when that was worse."""
        first = self.failed_at or self.as_is
        if first.worst is None:
            return f"As it is: not measured ({self.as_is.error})"
        text = f"As it is ({self.framework}): {_judged(first)}"
        worst = self.as_is
        if (
            worst.worst is not None
            and worst.worst.concurrency != first.worst.concurrency
            and worst.outcome != first.outcome
        ):
            text += f"; {_judged(worst, short=True)}"
        return text

    def change(self) -> str | None:
        if not self.chosen:
            return None
        said = "; ".join(
            f"{s.title}: " + "; ".join(line for line in s.code.splitlines() if not line.startswith("#"))
            for s in self.snippets()
        )
        # Its runs carry the scenario's declared worker class: the fix's gunicorn arguments say gthread.
        gthread = "gthread" in str(self.chosen.fix.keys.get("gunicorn_args", "")).split()
        proxy = f"; {PROXY_NOTE}" if gthread else ""
        return f"Change ({said}){proxy}; sized by need: {self.sizing}."

    def lines(self) -> list[str]:
        """The answer in at most :data:`advice.ANSWER_LINES` lines: headline, change, as it is, the
        fix's measured run, the other fixes, what was not tried."""
        out = [self.headline()]
        out += [c] if (c := self.change()) else []
        out.append(self.as_is_line())
        if self.chosen:
            out.append(f"With it: {self.chosen.line()}")
        out += [f"Also tried: {t.line()}" for t in self.tried if t is not self.chosen]
        out += [f"Not tried: {s['title']}: {s['reason']}" for s in self.skipped]
        return out[: advice.ANSWER_LINES]

    def snippets(self) -> list[Snippet]:
        """The chosen fix in the framework's words, each part with its measured run."""
        return (
            words(self.chosen.fix, self.framework, f"{self.scenario} with it: {self.chosen.line()}")
            if self.chosen
            else []
        )

    def recommended(self) -> str | None:
        """A scenarios file that reruns the team's code with the chosen fix laid over it."""
        if not self.chosen:
            return None
        steps = ",".join(str(r.concurrency) for r in self.chosen.runs)
        keys = {k: v for k, v in self.app.items() if k in _APP_KEYS and v not in (None, {}, "")}
        keys = {"app" if k == "command" else k: v for k, v in keys.items()}
        if keys.get("ready_path") == keys.get("path"):
            del keys["ready_path"]
        keys.update(self.chosen.fix.keys)
        lines = [
            f"# {self.project} with the fix that held on its code (healthz lab run --try-fixes): rerun it to check it holds:",
            f"#   healthz lab run --scenarios-file recommended.toml -c {steps}",
            "[scenario.recommended]",
            f"description = {_toml(f'{self.project} with {self.chosen.fix.title}')}",
            *(f"{k} = {_toml(v)}" for k, v in keys.items()),
        ]
        return "\n".join(lines) + "\n"

    def blocks(self) -> list[tuple]:
        """The answer and its settings as report blocks (Markdown and HTML alike)."""
        lines = self.lines()
        blocks: list[tuple] = [("p", f"**{lines[0]}**"), ("ul", lines[1:])]
        if self.chosen:
            blocks += [
                ("h2", f"The change for {self.project}"),
                (
                    "p",
                    "Measured on your code with the change laid over it from outside (nothing in your project was "
                    "written). Rerun it: `healthz lab run --scenarios-file recommended.toml` (beside this report).",
                ),
            ]
            for s in self.snippets():
                blocks += [("h3", s.title), ("pre", s.code), ("p", f"Measured: {s.backed_by}.")]
        return blocks


def _outcome(v: verdict.Verdict) -> str:
    """A verdict's outcome in a few words: FAILED with its cause and the share failed on its worst step."""
    if v.outcome is verdict.Outcome.FAILED and verdict.stalled(v.worst) and not v.worst.error_rate:
        return f"FAILED ({v.cause}: no request completed for {v.worst.stalled_seconds:g} s, none failed)"
    if v.outcome is verdict.Outcome.FAILED:
        return f"FAILED ({v.cause}, {_pct(v.worst.error_rate)} failed)"
    return str(v.outcome)


def _judged(v: verdict.Verdict, short: bool = False) -> str:
    """A verdict on its worst step in one clause: outcome, failures, churn, TIME_WAIT."""
    r = v.worst
    what = _outcome(v) if v.outcome is verdict.Outcome.FAILED else f"{v.outcome}, {_pct(r.error_rate)} failed"
    text = f"{what} at {r.concurrency:,} clients"
    if short:
        return text
    ports = f" of {r.ports:,}" if r.ports else ""
    return (
        f"{text}, {_n(r.sessions_per_request, 3)} sessions per request ({_n(r.sessions_per_second)} new connections/s), "
        f"TIME_WAIT peak {_n(r.time_wait_peak)}{ports}"
    )


_APP_KEYS = ("command", "app_dir", "env", "setup", "path", "ready_path", "python", "ready_timeout")


def _toml(value: Any) -> str:
    """``value`` as TOML: strings (JSON's escapes are TOML's), numbers, booleans, inline tables; passwords masked."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(mask_password(str(value)))


def _python(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _dict(values: Mapping[str, Any]) -> str:
    return (
        "{" + ", ".join(f'"{k}": {_dict(v) if isinstance(v, Mapping) else _python(v)}' for k, v in values.items()) + "}"
    )


def _pgbouncer_ini(fix: Fix, backed: str) -> Snippet:
    """The pgbouncer.ini of a PgBouncer fix, on the application host's Unix socket as measured."""
    ini = pgbouncer_ini(fix.keys.get("pgbouncer_pool_mode", "transaction"), fix.keys.get("pgbouncer_pool_size"))
    return Snippet("PgBouncer on the application host (pgbouncer.ini)", "ini", ini, backed)


def words(fix: Fix, framework: str, backed: str) -> list[Snippet]:
    """``fix`` in ``framework``'s words: pgbouncer.ini, a settings.py block (pointed at PgBouncer's
    socket when it has one), ``SQLALCHEMY_ENGINE_OPTIONS``, ``create_engine`` arguments, gunicorn
    flags, the sysctl."""
    out = []
    bouncer = Placement.parse(fix.keys.get("pgbouncer", Placement.NONE)).pooled
    if bouncer:
        out.append(_pgbouncer_ini(fix, backed))
    if databases := fix.keys.get("django_databases"):
        where = (
            [
                'DATABASES["default"]["HOST"] = "/var/run/postgresql"  # PgBouncer\'s unix_socket_dir',
                'DATABASES["default"]["PORT"] = "6432"',
            ]
            if bouncer
            else []
        )
        code = "\n".join(
            where
            + [
                f'DATABASES["default"].setdefault("OPTIONS", {{}}).update({_dict(v)})'
                if k == "OPTIONS"
                else f'DATABASES["default"]["{k}"] = {_python(v)}'
                for k, v in databases.items()
            ]
        )
        out.append(Snippet("Django: settings.py, after DATABASES", "python", code, backed))
    if pool := fix.keys.get("sqlalchemy_pool"):
        if framework == "Flask-SQLAlchemy":
            code = f'app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {_dict(pool)}'
            out.append(Snippet("Flask-SQLAlchemy: the app's config", "python", code, backed))
        else:
            args = ", ".join(f"{k}={_python(v)}" for k, v in pool.items())
            out.append(Snippet("SQLAlchemy: create_engine", "python", f"engine = create_engine(url, {args})", backed))
    if args := fix.keys.get("gunicorn_args"):
        settings = args.split()
        conf = "\n".join(
            f"{a.lstrip('-').replace('-', '_')} = {b if b.isdigit() else _python(b)}"
            for a, b in zip(settings[::2], settings[1::2])
        )
        code = f"# gunicorn.conf.py (or on the command line: {args})\n{conf}"
        if "gthread" in settings:
            code += proxy_lines()
        out.append(Snippet("gunicorn", "python", code, backed))
    if fix.keys.get("tcp_tw_reuse") is not None:
        out.append(
            Snippet(
                "Linux (the application host)",
                "shell",
                f"sysctl -w net.ipv4.tcp_tw_reuse={fix.keys['tcp_tw_reuse']}",
                backed,
            )
        )
    return out


def _choose(tried: Sequence[Tried]) -> Tried | None:
    """The fix that held with margin and changes least (a knob never)."""
    held = [t for t in tried if t.held and not t.fix.knob and t.runs]
    fastest = max((top(t.runs).rps or 0 for t in held), default=0)
    close = [t for t in held if (top(t.runs).rps or 0) >= (1 - advice.MARGIN) * fastest]
    return min(close, key=lambda t: (t.fix.size, top(t.runs).backends_peak or 0, -(top(t.runs).rps or 0)), default=None)


def answers(
    meta: Mapping[str, Any],
    results: Sequence[RunFigures],
    verdicts: Mapping[str, verdict.Verdict],
    limits: DatabaseLimits | None = None,
) -> list[OwnAnswer]:
    """An :class:`OwnAnswer` for each own scenario of the run that tried fixes (``meta["fixes"]``)."""
    out = []
    scenarios = {s["name"]: s for s in (meta.get("config") or {}).get("scenarios", [])}
    for name, plan in (meta.get("fixes") or {}).items():
        if name not in verdicts:
            continue
        as_is = verdicts[name]
        app = (scenarios.get(name) or {}).get("app") or {}
        fixed = [r for r in results if r.fix and r.fix.get("of") == name]
        tried = []
        for fix in plan["fixes"]:
            of_fix = [r for r in fixed if r.fix["name"] == fix["name"]]
            if of_fix:
                tried.append(Tried(Fix.from_dict(fix), verdicts[of_fix[0].scenario], tuple(verdict.measured(of_fix))))
        chosen = _choose(tried)
        steps = set(plan.get("steps") or [])
        first = min(
            (r for r in results if r.scenario == name and r.concurrency in steps),
            key=lambda r: r.concurrency,
            default=None,
        )
        failed_at = verdict.judge(name, [first], limits) if first else None
        if chosen:
            reply = OwnReply.FIXED if chosen.fix.pooling else OwnReply.NOT_POOLING_ALONE
        elif tried:
            reply = OwnReply.NOT_FIXED
        elif plan.get("why") == "it held at every step as it is":
            reply = OwnReply.HELD_AS_IS
        else:
            reply = OwnReply.NOT_TRIED
        out.append(
            OwnAnswer(
                name,
                _project(app, name),
                plan.get("framework", "unknown"),
                reply,
                as_is,
                failed_at,
                chosen,
                tuple(tried),
                tuple(plan.get("skipped") or ()),
                plan.get("sizing"),
                plan.get("why"),
                app,
            )
        )
    return out


def _project(app: Mapping[str, Any], name: str) -> str:
    """The team's project as its folder's name (else the scenario's)."""
    return Path(app["app_dir"]).name if app.get("app_dir") else name
