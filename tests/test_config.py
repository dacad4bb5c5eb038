"""Settings: parsed once, defaults are SQLAlchemy's, every bad value refused in one line."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import pool

from healthz.config import ENVIRONMENT, Settings, SettingsError, mask_password

URL = "postgresql://healthz:s3cret-pw@127.0.0.1:5432/healthz"


def test_defaults_are_sqlalchemys_own():
    s = Settings.from_env({"DATABASE_URL": URL})
    q = pool.QueuePool(lambda: None)
    assert (s.pool_size, s.max_overflow, s.pool_timeout) == (q.size(), q._max_overflow, q._timeout)
    assert s.pool_class == "QueuePool"
    assert s.pool_recycle == -1 and s.pool_pre_ping is False and s.pool_use_lifo is False
    assert s.green_driver == "auto" and s.metrics is True


def test_every_variable_is_read():
    env = {
        "DATABASE_URL": URL,
        "HEALTHZ_POOL_CLASS": "nullpool",
        "HEALTHZ_POOL_SIZE": "20",
        "HEALTHZ_MAX_OVERFLOW": "0",
        "HEALTHZ_POOL_TIMEOUT": "2.5",
        "HEALTHZ_POOL_RECYCLE": "300",
        "HEALTHZ_POOL_PRE_PING": "yes",
        "HEALTHZ_POOL_USE_LIFO": "1",
        "HEALTHZ_CONNECT_TIMEOUT": "3",
        "HEALTHZ_STATEMENT_TIMEOUT": "250",
        "HEALTHZ_ISOLATION_LEVEL": "read committed",
        "HEALTHZ_GREEN_DRIVER": "OFF",
        "HEALTHZ_METRICS": "false",
        "HEALTHZ_APPLICATION_NAME": "web-1",
        "HEALTHZ_ERROR_STATUS": "503",
        "HEALTHZ_DRIVER": "Psycopg",
        "HEALTHZ_POOL_FAIR": "no",
        "HEALTHZ_LIVENESS_BIND": " 0.0.0.0:8001",
    }
    assert set(env) == set(ENVIRONMENT.values())
    s = Settings.from_env(env)
    assert s == Settings(
        database_url="postgresql+psycopg2://healthz:s3cret-pw@127.0.0.1:5432/healthz",
        pool_class="NullPool",
        pool_size=20,
        max_overflow=0,
        pool_timeout=2.5,
        pool_recycle=300,
        pool_pre_ping=True,
        pool_use_lifo=True,
        connect_timeout=3,
        statement_timeout=250,
        isolation_level="READ COMMITTED",
        green_driver="off",
        metrics=False,
        application_name="web-1",
        error_status=503,
        driver="psycopg",
        pool_fair=False,
        liveness_bind="0.0.0.0:8001",
    )
    assert s.engine_url == "postgresql+psycopg://healthz:s3cret-pw@127.0.0.1:5432/healthz"


@pytest.mark.parametrize(
    "variable, value, accepted",
    [
        ("HEALTHZ_POOL_SIZE", "abc", "an integer >= 0"),
        ("HEALTHZ_POOL_SIZE", "-1", "an integer >= 0"),
        ("HEALTHZ_MAX_OVERFLOW", "-2", "an integer >= -1"),
        ("HEALTHZ_MAX_OVERFLOW", "1.5", "an integer >= -1"),
        ("HEALTHZ_POOL_TIMEOUT", "soon", "a number of seconds >= 0"),
        ("HEALTHZ_POOL_TIMEOUT", "-1", "a number of seconds >= 0"),
        ("HEALTHZ_POOL_TIMEOUT", "inf", "a number of seconds >= 0"),
        ("HEALTHZ_POOL_RECYCLE", "-5", "an integer number of seconds, or -1 for never"),
        ("HEALTHZ_POOL_PRE_PING", "maybe", "one of 1, true, yes, on, 0, false, no, off"),
        ("HEALTHZ_POOL_CLASS", "StaticPool", "one of QueuePool, NullPool, SingletonThreadPool"),
        ("HEALTHZ_GREEN_DRIVER", "always", "one of auto, on, off"),
        ("HEALTHZ_DRIVER", "pg8000", "one of psycopg2, psycopg"),
        (
            "HEALTHZ_ISOLATION_LEVEL",
            "READ UNCOMMITTED",
            "one of AUTOCOMMIT, READ COMMITTED, REPEATABLE READ, SERIALIZABLE",
        ),
        ("HEALTHZ_CONNECT_TIMEOUT", "x", "an integer >= 0"),
        ("HEALTHZ_STATEMENT_TIMEOUT", "-3", "an integer >= 0"),
        ("HEALTHZ_APPLICATION_NAME", "has space", "1 to 63 letters, digits or _.:-"),
        (
            "HEALTHZ_ERROR_STATUS",
            "200",
            "an HTTP status from 400 to 599 (499, the report's, or 503 for load balancers)",
        ),
        (
            "HEALTHZ_ERROR_STATUS",
            "600",
            "an HTTP status from 400 to 599 (499, the report's, or 503 for load balancers)",
        ),
        (
            "HEALTHZ_ERROR_STATUS",
            "5xx",
            "an HTTP status from 400 to 599 (499, the report's, or 503 for load balancers)",
        ),
    ],
)
def test_bad_value_names_variable_value_and_accepted(variable, value, accepted):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"DATABASE_URL": URL, variable: value})
    message = str(caught.value)
    assert message == f"{variable}={value!r} is not accepted: expected {accepted}"
    assert "\n" not in message


@pytest.mark.parametrize(
    "url",
    [
        "mysql://healthz:s3cret-pw@localhost/healthz",
        "postgresql://healthz:s3cret-pw@localhost",
        "postgresql://healthz:s3cret-pw@localhost:notaport/healthz",
        "postgresql://healthz:s3cret-pw@localhost:99999/healthz",
        "postgresql://healthz:s3cret-pw@/healthz",
        "postgresql+asyncpg://healthz:s3cret-pw@localhost/healthz",
        "not a url s3cret-pw",
        "postgresql://healthz:s3cret-pw@localhost/a/b",
    ],
)
def test_bad_database_url_is_refused_without_its_password(url):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"DATABASE_URL": url})
    assert caught.value.variable == "DATABASE_URL"
    assert "s3cret-pw" not in str(caught.value)


def test_missing_database_url():
    with pytest.raises(SettingsError, match="DATABASE_URL='' is not accepted"):
        Settings.from_env({})


def test_postgres_scheme_and_socket_host_are_accepted():
    assert (
        Settings.from_env({"DATABASE_URL": "postgres://u:p@db:6543/x"}).database_url
        == "postgresql+psycopg2://u:p@db:6543/x"
    )
    assert Settings.from_env({"DATABASE_URL": "postgresql:///x?host=/tmp"}).database_url.endswith("///x?host=/tmp")


def test_password_is_masked_in_describe_and_repr():
    s = Settings.from_env({"DATABASE_URL": URL})
    assert "s3cret-pw" not in s.describe()
    assert "s3cret-pw" not in repr(s)
    assert "healthz:***@127.0.0.1" in s.safe_database_url


@pytest.mark.parametrize(
    "text, masked",
    [
        ("postgresql://u:pw@h/d", "postgresql://u:***@h/d"),
        ("postgresql://u@h/d", "postgresql://u@h/d"),
        ("host=h password=pw dbname=d", "host=h password=*** dbname=d"),
        ("postgresql://u:p:w@h/d", "postgresql://u:***@h/d"),
    ],
)
def test_mask_password(text, masked):
    assert mask_password(text) == masked


def test_from_mapping_validates_like_the_environment():
    s = Settings.from_mapping({"database_url": URL, "pool_size": 3, "pool_pre_ping": True})
    assert (s.pool_size, s.pool_pre_ping) == (3, True)
    with pytest.raises(SettingsError, match="HEALTHZ_POOL_SIZE='-4'"):
        Settings.from_mapping({"database_url": URL, "pool_size": -4})
    with pytest.raises(SettingsError, match="pool_sise"):
        Settings.from_mapping({"database_url": URL, "pool_sise": 3})
    assert s.replace(max_overflow=0).max_overflow == 0


@hsettings(max_examples=300, deadline=None)
@given(variable=st.sampled_from(sorted(set(ENVIRONMENT.values()))), value=st.text(max_size=40))
def test_any_value_is_a_clear_refusal_or_a_valid_setting(variable, value):
    environ = {"DATABASE_URL": URL, variable: value}
    try:
        s = Settings.from_env(environ)
    except SettingsError as exc:
        assert exc.variable == variable
        assert str(exc).startswith(f"{variable}=")
        assert "s3cret-pw" not in str(exc)
    else:
        assert s.pool_size >= 0 and s.max_overflow >= -1 and s.pool_timeout >= 0
        assert s.database_url.startswith("postgresql+psycopg2://")


def test_overrides_are_laid_over_the_environment():
    s = Settings.from_env(
        {"DATABASE_URL": URL, "HEALTHZ_POOL_SIZE": "9", "HEALTHZ_MAX_OVERFLOW": "4"}, {"max_overflow": 0}
    )
    assert (s.pool_size, s.max_overflow) == (9, 0)


def test_create_app_layers_test_settings_over_the_environment(monkeypatch, database_url):
    from healthz import create_app

    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("HEALTHZ_POOL_SIZE", "9")
    app = create_app({"pool_class": "QueuePool", "max_overflow": 0})
    engine = app.extensions["healthz.engine"]
    assert (engine.pool.size(), engine.pool._max_overflow) == (9, 0)
    with pytest.raises(SettingsError, match="HEALTHZ_POOL_SIZE='nine'"):
        create_app({"pool_size": "nine"})
    engine.dispose()
