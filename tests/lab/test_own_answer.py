"""The answer for a team's own code: the fix that held and changes least, in its framework's words,
and a scenarios file that reruns it (pure: results in, answer out)."""

from __future__ import annotations

import sys

import pytest
from helpers import lab_run

from healthz.lab import fixes, own_answer, report, scenarios, snippets, verdict
from healthz.plan import DatabaseLimits

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

LIMITS = DatabaseLimits(100, 3)
APP = {
    "command": "gunicorn mysite.wsgi:application -b {bind}",
    "app_dir": "/srv/mysite",
    "env": {"DATABASE_URL": "postgresql://team:s3cret@db/mysite"},
    "setup": "python manage.py migrate",
    "path": "/health/",
    "ready_path": "/health/",
    "python": None,
    "ready_timeout": 60.0,
}
PERSISTENT = fixes.Fix("conn-max-age", "CONN_MAX_AGE=600", fixes.SETTING, {"django_databases": {"CONN_MAX_AGE": 600}})
POOL = fixes.Fix(
    "django-pool",
    "Django's pool (max_size=4)",
    fixes.SETTING,
    {"django_databases": {"CONN_MAX_AGE": 0, "OPTIONS": {"pool": {"max_size": 4}}}},
)
GTHREAD = fixes.Fix(
    "gthread-conn-max-age",
    "gthread, 4 threads, CONN_MAX_AGE=600",
    fixes.WORKER_CLASS,
    {"gunicorn_args": "--worker-class gthread --threads 4", "django_databases": {"CONN_MAX_AGE": 600}},
)
KNOB = fixes.Fix("tcp-tw-reuse", "net.ipv4.tcp_tw_reuse=1", fixes.KNOB, {"tcp_tw_reuse": 1})


def failing(name, fix=None, step=500):
    return lab_run(
        name,
        step,
        failures=3000,
        causes={"address_unavailable": 3000},
        sessions=9000,
        own_service=True,
        fix=fix and {**fix.to_dict(), "of": "app"},
    )


def holding(name, fix, requests=10000, step=500):
    return lab_run(name, step, requests=requests, sessions=4, own_service=True, fix={**fix.to_dict(), "of": "app"})


def answer(results, tried=(PERSISTENT, POOL, GTHREAD, KNOB), steps=(500,), why=None):
    meta = {
        "config": {"scenarios": [{"name": "app", "app": APP}]},
        "fixes": {
            "app": {
                "framework": "Django",
                "steps": list(steps),
                "fixes": [f.to_dict() for f in tried],
                "skipped": [{"title": "Django's pool", "reason": "needs Django 5.1+"}],
                "sizing": "pool_size=4 per worker (2 workers): ...",
                "why": why,
            }
        },
    }
    verdicts = verdict.judge_all(results, LIMITS)
    (said,) = own_answer.answers(meta, results, verdicts, LIMITS)
    return said


def test_the_smallest_change_that_held_with_margin_is_the_answer_and_a_knob_never_is():
    said = answer(
        [
            failing("app"),
            failing("app+conn-max-age", PERSISTENT),
            holding("app+django-pool", POOL, requests=9000),
            holding("app+gthread-conn-max-age", GTHREAD, requests=10000),
            holding("app+tcp-tw-reuse", KNOB, requests=12000),
        ]
    )
    assert said.reply is own_answer.OwnReply.FIXED and said.chosen.fix == POOL
    lines = said.lines()
    assert len(lines) <= 8 and lines[0].startswith("Does pooling alone fix it for mysite? Yes: Django's pool")
    assert 'DATABASES["default"]["CONN_MAX_AGE"] = 0' in lines[1]
    assert lines[2].startswith("As it is (Django): FAILED (address_unavailable")
    assert any(line.startswith("Also tried: CONN_MAX_AGE=600: FAILED") for line in lines)


def test_a_worker_class_change_that_alone_held_is_not_pooling_alone():
    said = answer(
        [
            failing("app"),
            failing("app+conn-max-age", PERSISTENT),
            failing("app+django-pool", POOL),
            holding("app+gthread-conn-max-age", GTHREAD),
        ]
    )
    assert said.reply is own_answer.OwnReply.NOT_POOLING_ALONE and said.chosen.fix == GTHREAD
    assert said.headline().startswith("Does pooling alone fix it for mysite? Not pooling alone: gthread")
    titles = [s.title for s in said.snippets()]
    assert titles == ["Django: settings.py, after DATABASES", "gunicorn"]
    assert 'worker_class = "gthread"\nthreads = 4' in said.snippets()[1].code
    # gthread's threads are what slow clients hold: the answer says what keeps it answering.
    assert snippets.PROXY_NOTE in said.change() and "deploy/nginx/healthz.conf" in said.snippets()[1].code


def test_pgbouncer_in_front_of_their_code_is_pooling_alone_and_said_as_pgbouncer_ini_and_settings():
    bouncer = fixes.pgbouncer(6)
    said = answer(
        [failing("app"), holding("app+pgbouncer", bouncer), holding("app+gthread-conn-max-age", GTHREAD)],
        tried=(bouncer, GTHREAD),
    )
    assert said.reply is own_answer.OwnReply.FIXED and said.chosen.fix == bouncer  # before the worker class
    ini, settings = said.snippets()
    assert ini.language == "ini" and "pool_mode = transaction" in ini.code and "default_pool_size = 6" in ini.code
    assert 'DATABASES["default"]["PORT"] = "6432"' in settings.code
    assert 'DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True' in settings.code
    assert tomllib.loads(said.recommended())["scenario"]["recommended"]["pgbouncer"] == "app-unix"


def test_nothing_that_held_and_nothing_needed_are_said_apart():
    said = answer([failing("app"), failing("app+conn-max-age", PERSISTENT)], tried=(PERSISTENT,))
    assert said.reply is own_answer.OwnReply.NOT_FIXED and said.chosen is None and said.recommended() is None
    calm = answer([holding("app", KNOB)], tried=(), steps=(), why="it held at every step as it is")
    assert calm.reply is own_answer.OwnReply.HELD_AS_IS and "held at every step as it is" in calm.headline()


def test_the_recommendation_reruns_their_code_with_the_fix_and_hides_passwords(tmp_path):
    said = answer([failing("app"), holding("app+django-pool", POOL)], tried=(POOL,))
    text = said.recommended()
    assert "s3cret" not in text
    data = tomllib.loads(text)["scenario"]["recommended"]
    assert data["app"] == APP["command"] and data["django_databases"]["OPTIONS"] == {"pool": {"max_size": 4}}
    assert "ready_path" not in data  # the same as path
    (tmp_path / "recommended.toml").write_text(text.replace("/srv/mysite", str(tmp_path)))
    (again,) = scenarios.select([], [tmp_path / "recommended.toml"])
    assert again.service.spec.django_databases == POOL.keys["django_databases"] and not again.tries_fixes


@pytest.mark.parametrize("framework", ["Flask-SQLAlchemy", "SQLAlchemy"])
def test_a_bounded_pool_is_said_in_each_frameworks_words(framework):
    fix = fixes.Fix("sqlalchemy-pool", "p", fixes.SETTING, {"sqlalchemy_pool": {"pool_size": 4, "max_overflow": 0}})
    (snippet,) = own_answer.words(fix, framework, "measured")
    expected = {
        "Flask-SQLAlchemy": 'app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_size": 4, "max_overflow": 0}',
        "SQLAlchemy": "engine = create_engine(url, pool_size=4, max_overflow=0)",
    }
    assert snippet.code == expected[framework]


def test_the_report_and_the_terminal_begin_with_the_answer_for_their_code(tmp_path):
    results = [failing("app"), holding("app+django-pool", POOL)]
    said = answer(results, tried=(POOL,))
    data = {
        "meta": {"config": {"scenarios": [{"name": "app", "app": APP}]}, "fixes": _fixes_meta()},
        "results": results,
    }
    assert report.terminal(data).splitlines()[0] == said.headline()
    blocks = report.build(data, [])
    assert blocks[1] == ("p", f"**{said.headline()}**")
    assert ("h2", "The change for mysite") in blocks


def _fixes_meta():
    return {"app": {"framework": "Django", "steps": [500], "fixes": [POOL.to_dict()], "skipped": [], "sizing": "s"}}
