"""The parts of a lab run, made and started on a real PostgreSQL: the database a run is given
(a throwaway server, seeded and removed; or a --database-url checked, and refused in one line
without its password), and the pool figures summed over services."""

from __future__ import annotations

import contextlib

import psycopg2
import pytest

from healthz.lab import rig
from healthz.lab.config import LabConfig, LabError
from healthz.lab.scenarios import DEFAULTS, running_service
from healthz.lab.topology import Loopback
from healthz.postgres import free_port


def config(tmp_path, **changes) -> LabConfig:
    scenario = changes.pop("scenario", DEFAULTS["eventlet-nullpool"])
    return LabConfig(scenarios=[scenario], concurrency=[10], output=tmp_path, roles=7, **changes)


def test_a_throwaway_server_is_seeded_for_the_run_and_gone_after(tmp_path):
    with rig.database(config(tmp_path), Loopback()) as (url, dsn, pg):
        assert pg is not None and pg.process.poll() is None and f":{pg.port}/" in url
        with contextlib.closing(psycopg2.connect(url)) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM role")
            assert cur.fetchone()[0] == 7
        folder = pg.datadir
    assert pg.process.poll() is not None and not folder.exists()


def test_a_database_url_is_checked_and_never_written_without_seed(tmp_path, postgres):
    url = postgres.create_database("rig_empty")
    try:
        with (
            pytest.raises(LabError, match="has no table role: pass --seed") as refused,
            rig.database(config(tmp_path, database_url=url), Loopback()),
        ):
            pass
        assert postgres.password not in str(refused.value)
        with rig.database(config(tmp_path, database_url=url, seed=True), Loopback()) as (used, _, pg):
            assert pg is None and used.endswith("/rig_empty")
        rig.check_seeded(url)
    finally:
        postgres.drop_database("rig_empty")


def test_a_running_service_database_is_only_read(tmp_path, postgres):
    url = postgres.create_database("rig_target")
    try:
        cfg = config(tmp_path, database_url=url, scenario=running_service("http://127.0.0.1:9/"))
        with rig.database(cfg, Loopback()) as (used, dsn, pg):
            assert pg is None and used == dsn  # no table role needed: its own tables are not the lab's
    finally:
        postgres.drop_database("rig_target")


def test_an_unreachable_database_url_is_one_line_without_its_password(tmp_path):
    url = f"postgresql://healthz:pw-not-shown@127.0.0.1:{free_port()}/healthz"
    with pytest.raises(LabError) as refused, rig.database(config(tmp_path, database_url=url), Loopback()):
        pass
    message = str(refused.value)
    assert "is not reachable" in message and "pw-not-shown" not in message and "\n" not in message
