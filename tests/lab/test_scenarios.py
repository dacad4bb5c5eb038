"""Scenarios as data: the defaults, user specs and TOML files, and their refusals."""

from __future__ import annotations

import pytest

from healthz.lab.scenarios import DEFAULTS, Scenario, ScenarioError, load_file, parse_concurrency, parse_spec, select

REQUIRED = (
    "eventlet-nullpool",
    "eventlet-singleton",
    "eventlet-queuepool-default",
    "eventlet-queuepool-sized",
    "gevent-queuepool-sized",
    "gevent-queuepool-blocking",
    "gthread-queuepool",
)


def test_the_issue_s_scenarios_exist_and_stand_for_what_they_say():
    assert set(REQUIRED) <= set(DEFAULTS)
    env = {name: DEFAULTS[name].environment("postgresql://u:p@h/db") for name in DEFAULTS}
    assert env["eventlet-nullpool"]["HEALTHZ_POOL_CLASS"] == "NullPool"
    assert env["eventlet-singleton"]["HEALTHZ_POOL_CLASS"] == "SingletonThreadPool"
    assert (
        env["eventlet-queuepool-default"]["HEALTHZ_POOL_SIZE"],
        env["eventlet-queuepool-default"]["HEALTHZ_MAX_OVERFLOW"],
    ) == ("5", "10")
    assert env["eventlet-queuepool-sized"]["HEALTHZ_MAX_OVERFLOW"] == "0"
    assert env["gevent-queuepool-sized"]["HEALTHZ_GREEN_DRIVER"] == "on"
    assert env["gevent-queuepool-blocking"]["HEALTHZ_GREEN_DRIVER"] == "off"
    assert DEFAULTS["gthread-queuepool"].worker_class == "gthread"
    assert DEFAULTS["eventlet-singleton-keepalive"].connection == "keep-alive"
    assert all(DEFAULTS[n].connection == "close" for n in REQUIRED)
    for name, scenario in DEFAULTS.items():
        assert env[name]["DATABASE_URL"] == "postgresql://u:p@h/db"
        assert env[name]["GUNICORN_WORKERS"] == str(scenario.workers)
        assert scenario.description and scenario.worker_class in scenario.summary()


def test_pool_capacity():
    assert DEFAULTS["eventlet-queuepool-default"].pool_capacity() == 15
    assert DEFAULTS["eventlet-queuepool-sized"].pool_capacity() == 10
    assert DEFAULTS["eventlet-nullpool"].pool_capacity() is None
    assert DEFAULTS["eventlet-singleton"].pool_capacity() is None


def test_a_spec_changes_a_known_scenario():
    changed = parse_spec("eventlet-queuepool-sized:pool_size=40,workers=3,connection=keep-alive", DEFAULTS)
    assert changed.name == "eventlet-queuepool-sized:pool_size=40,workers=3,connection=keep-alive"
    assert changed.pool_capacity() == 40 and changed.workers == 3 and changed.connection == "keep-alive"
    assert changed.worker_class == "eventlet"
    assert DEFAULTS["eventlet-queuepool-sized"].pool_capacity() == 10  # the default is untouched


def test_a_spec_defines_a_new_scenario():
    mine = parse_spec(
        "mine:worker_class=gevent,pool_class=QueuePool,pool_size=3,max_overflow=0,green_driver=on", DEFAULTS
    )
    assert mine.name == "mine" and mine.worker_class == "gevent" and mine.pool_capacity() == 3
    assert mine.environment("postgresql://u:p@h/db")["HEALTHZ_GREEN_DRIVER"] == "on"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nope", "unknown scenario 'nope': choose from eventlet-nullpool"),
        ("mine:pool_class=NullPool", "needs worker_class"),
        ("eventlet-nullpool:pool_class=Foo", "HEALTHZ_POOL_CLASS='Foo' is not accepted"),
        ("eventlet-nullpool:bogus=1", "unknown key(s) bogus; accepted: description, worker_class"),
        ("eventlet-nullpool:pool_size", "'pool_size' is not key=value"),
        ("eventlet-nullpool:workers=0", "workers='0': expected an integer >= 1"),
        ("eventlet-nullpool:connection=sometimes", "connection 'sometimes' is not one of close, keep-alive"),
        ("gthread-queuepool:green_driver=on", "green_driver=on needs eventlet or gevent"),
        ("eventlet-nullpool:database_url=postgresql://a:b@c/d", "unknown key(s) database_url"),
        ("mine:worker_class=tornado", "worker_class 'tornado' is not one of eventlet, gevent, gthread, sync"),
    ],
)
def test_bad_specs_are_refused_with_what_is_accepted(spec, message):
    with pytest.raises(ScenarioError) as info:
        parse_spec(spec, DEFAULTS)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_toml_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(
        '[scenario.big-pool]\nbase = "eventlet-queuepool-sized"\npool_size = 50\ndescription = "more"\n\n'
        '[scenario.gevent-null]\nworker_class = "gevent"\npool_class = "NullPool"\ngreen_driver = "on"\n\n'
        "[scenario.eventlet-nullpool]\nworkers = 4\n"
    )
    found = load_file(path, DEFAULTS)
    assert list(found) == ["big-pool", "gevent-null", "eventlet-nullpool"]
    assert found["big-pool"].pool_capacity() == 50 and found["big-pool"].description == "more"
    assert found["gevent-null"].worker_class == "gevent"
    assert found["eventlet-nullpool"].workers == 4  # a table named after a default changes it
    assert [s.name for s in select([], [path])][-3:] == ["big-pool", "gevent-null", "eventlet-nullpool"]
    assert [s.name for s in select(["big-pool"], [path])] == ["big-pool"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("not toml [", "not valid TOML"),
        ("[other]\nx = 1\n", "no [scenario.NAME] tables"),
        ('[scenario.x]\nbase = "missing"\n', "unknown base 'missing'"),
        ('[scenario.x]\nworker_class = "gevent"\npool_size = "many"\n', "HEALTHZ_POOL_SIZE='many' is not accepted"),
    ],
)
def test_bad_toml_files_are_refused(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_file(path, DEFAULTS)


def test_missing_toml_file(tmp_path):
    with pytest.raises(ScenarioError, match="No such file"):
        select([], [tmp_path / "nowhere.toml"])


def test_the_same_scenario_twice_is_refused():
    with pytest.raises(ScenarioError, match="given twice: eventlet-nullpool"):
        select(["eventlet-nullpool", "eventlet-nullpool"])


def test_concurrency_lists():
    assert parse_concurrency("200,500, 1000") == [200, 500, 1000]
    for bad in ("", "0", "-5", "1,,2", "x", "20001", "1.5"):
        with pytest.raises(ScenarioError, match="comma-separated integers from 1 to 20000"):
            parse_concurrency(bad)


def test_a_scenario_validates_when_made():
    with pytest.raises(ScenarioError, match="HEALTHZ_MAX_OVERFLOW"):
        Scenario("x", "d", "eventlet", settings={"max_overflow": -7})
