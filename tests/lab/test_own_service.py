"""A team's own service in the lab: a tiny WSGI app the test writes (not healthz), run from its own
command under real gunicorn against the lab's real PostgreSQL, on loopback and in netns; and each
command the lab cannot run refused in one line with nothing left running."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from healthz import cli
from healthz.lab import report
from healthz.lab.own_service import AppService, AppSpec, AppSpecError, placeholders
from healthz.lab.runner import Lab, LabConfig, Progress
from healthz.lab.scenarios import ScenarioError, load_file, running_service, select
from healthz.lab.topology import lab_namespaces
from healthz.postgres import free_port
from healthz.service import ServiceError

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="the netns topology needs root and iproute2"
)
VENV = Path(sys.prefix)  # the test's own venv: gunicorn and psycopg2 are there

# A health check that opens a connection per request, as Django with CONN_MAX_AGE=0 does; a
# failure is a 503 without a JSON body, and libpq's first line in the log.
TINY_APP = textwrap.dedent(
    """
    import os, psycopg2

    def application(environ, start_response):
        if environ["PATH_INFO"] != "/health":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not here"]
        try:
            conn = psycopg2.connect(os.environ["DATABASE_URL"], connect_timeout=5)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT count(*) FROM role")
                    cur.fetchone()
            finally:
                conn.close()
        except psycopg2.Error as exc:
            print("health check failed:", str(exc).strip().splitlines()[0], flush=True)
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"down"]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    """
)


# Its schema, as a team's create_all or migration makes it; it notes which database it found and
# what was in it. CREATE TABLE fails on a database that already has the table: setup runs on a fresh one.
SCHEMA = textwrap.dedent(
    """
    import os, psycopg2

    conn = psycopg2.connect(os.environ["DATABASE_URL"])
    with conn, conn.cursor() as cur:
        cur.execute("SELECT coalesce(string_agg(tablename, ','), '') FROM pg_tables WHERE schemaname = 'public'")
        open("schema-found", "w").write(f"{os.environ['PGDATABASE']} {os.environ['PGUSER']} [{cur.fetchone()[0]}]")
        cur.execute("CREATE TABLE role (id serial PRIMARY KEY, name text UNIQUE NOT NULL)")
    conn.close()
    """
)


def _project(tmp_path: Path, table: str) -> Path:
    """A project folder with the tiny app, its schema script and a scenarios file holding ``table``;
    the file's path."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "tinyapp.py").write_text(TINY_APP)
    (project / "schema.py").write_text(SCHEMA)
    toml = tmp_path / "mine.toml"
    toml.write_text(textwrap.dedent(table))
    return toml


def _ours_left(marker: str) -> list[str]:
    """Command lines of live processes that carry ``marker`` (the test's own folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if marker in cmdline and state != "Z" and int(entry.name) != os.getpid():
                found.append(cmdline)
    return found


def _run(tmp_path: Path, toml: Path, **fields) -> tuple[Lab, list]:
    config = LabConfig(scenarios=select([], [toml]), scenarios_files=[toml], output=tmp_path / "out", **fields)
    lab = Lab(config, Progress(io.StringIO()))
    return lab, lab.run()


def test_the_scenarios_file_describes_an_own_service_relative_to_itself(tmp_path):
    toml = _project(
        tmp_path,
        f"""
        [scenario.tiny]
        app = "gunicorn tinyapp:application -b {{bind}}"
        app_dir = "project"
        python = "{VENV}"
        path = "/health"
        env = {{ TINY_DB = "{{db_name}}" }}
        """,
    )
    tiny = load_file(toml, {})["tiny"]
    assert tiny.service.spec.app_dir == tmp_path / "project" and tiny.service.spec.ready == "/health"
    assert tiny.pool_shape().pool_class == "unknown" and tiny.pool_capacity() is None
    # Only the file's own service runs when it has one: the question is about that service.
    assert [s.name for s in select([], [toml])] == ["tiny"]
    values = placeholders("198.18.1.1", 8000, "postgresql://u:secret@198.18.0.1:6432/shop")
    env = tiny.service.spec.environment(values, base={"PATH": "/usr/bin"})
    assert env["TINY_DB"] == "shop" and env["PGPORT"] == "6432" and env["PORT"] == "8000"
    assert env["PATH"].split(os.pathsep)[0] == str(VENV / "bin")
    assert tiny.service.spec.argv(values) == ["gunicorn", "tinyapp:application", "-b", "198.18.1.1:8000"]
    # PgBouncer's Unix socket: its directory and port are in the URL's query.
    unix = placeholders("127.0.0.1", 8000, "postgresql://u:secret@/shop?host=/tmp/bouncer&port=6433")
    assert (unix["db_host"], unix["db_port"], unix["db_name"]) == ("/tmp/bouncer", "6433", "shop")


@pytest.mark.parametrize(
    "table, named",
    [
        ('app = "gunicorn x -b {bindd}"', "{bindd}"),
        ('app = ""', "app"),
        ('app = "x"\npath = "health"', "path"),
        ('app = "x"\napp_dir = "nowhere"', "app_dir"),
        ('app = "x"\npython = "/nowhere/venv"', "python"),
        ('app = "x"\nready_timeout = 0', "ready_timeout"),
        ('setup = "python manage.py migrate"', "need(s) app"),
        ('app = "x"\npgbouncer = "sidecar"', "pgbouncer"),
    ],
)
def test_a_wrong_app_key_is_refused_naming_it(tmp_path, table, named):
    toml = tmp_path / "bad.toml"
    toml.write_text(f"[scenario.mine]\n{table}\n")
    with pytest.raises(ScenarioError) as refused:
        load_file(toml, {})
    message = str(refused.value)
    assert "\n" not in message and "mine" in message and named in message


def test_an_own_service_is_measured_on_loopback_like_ours(tmp_path, postgres, database):
    toml = _project(
        tmp_path,
        f"""
        [scenario.tiny]
        app = "gunicorn tinyapp:application -b {{bind}} -w 2"
        app_dir = "project"
        python = "{VENV}"
        path = "/health"
        setup = "python -c 'import os; open(\\"setup-ran\\", \\"w\\").write(os.environ[\\"PGDATABASE\\"])'"
        """,
    )
    url = postgres.url_for(database)
    _, (run,) = _run(tmp_path, toml, concurrency=[10], duration=4, topology="loopback", database_url=url, doctor=False)
    assert run.error is None, run.error
    assert run.requests > 50 and run.failures == 0
    # A connection per request, counted by PostgreSQL itself.
    assert run.sessions_opened >= run.requests - run.failures
    assert run.cpu_seconds["gunicorn"] > 0 and run.worker_restarts == 0
    assert (tmp_path / "project" / "setup-ran").read_text() == database  # run against the lab's database
    run_dir = tmp_path / "out" / run.run_dir
    assert "Booting worker" in (run_dir / "service.log").read_text()
    commands = (run_dir / "commands.txt").read_text()
    assert "# service" in commands and "# setup" in commands and "PGPASSWORD=***" in commands
    assert "-b 127.0.0.1:" in commands  # the placeholder filled in
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.suffix != ".png"]
    assert not [p for p in written if postgres.password in p.read_text(errors="replace")]


def test_an_own_service_gets_an_empty_database_of_its_own_made_afresh_for_each_run(tmp_path):
    toml = _project(
        tmp_path,
        f"""
        [scenario.tiny]
        app = "gunicorn tinyapp:application -b {{bind}} -w 1"
        app_dir = "project"
        python = "{VENV}"
        path = "/health"
        setup = "python schema.py"
        """,
    )
    for n in (1, 2):  # the second run's setup creates its table again: nothing is left from the first
        lab, (run,) = _run(tmp_path / f"run{n}", toml, concurrency=[5], duration=2, topology="loopback", doctor=False)
        assert run.error is None and run.requests > 10 and run.failures == 0, (run.error, run.failures_by_cause)
        # Its own name and owner, and nothing of the lab's (no role table seeded) before its setup.
        assert (tmp_path / "project" / "schema-found").read_text() == "app_tiny app_tiny []"
        # Its sessions alone: one per request (the tiny app connects for each), none of the lab's probes.
        assert run.requests <= run.sessions_opened <= run.requests + 5 + 2
        # Its stack, read before the load: plain WSGI on psycopg2, no framework the lab knows.
        stack = lab.meta["stacks"]["tiny"]
        assert (
            stack["framework"] == "unknown" and stack["imports"] == ["psycopg2"] and stack["gunicorn"]["workers"] == 1
        )
    report.write(tmp_path / "run2" / "out")
    assert (
        "Your service `tiny` runs (read from its venv and command): unknown"
        in (tmp_path / "run2" / "out" / "report.md").read_text()
    )


@needs_root
def test_an_own_service_binding_every_address_exhausts_its_ports_in_netns(tmp_path):
    # The report's gunicorn.conf.py binds 0.0.0.0:$GUNICORN_PORT; a connection per request on 300
    # ports (5 new connections a second) runs out within the run.
    toml = _project(
        tmp_path,
        f"""
        [scenario.tiny-netns]
        app = "sh -c 'exec gunicorn tinyapp:application -b 0.0.0.0:$GUNICORN_PORT -w 2'"
        app_dir = "project"
        python = "{VENV}"
        path = "/health"
        setup = "python schema.py"
        env = {{ GUNICORN_PORT = "{{port}}" }}
        """,
    )
    _, (run,) = _run(tmp_path, toml, concurrency=[50], duration=6, topology="netns", ports=300)
    assert run.error is None, run.error
    assert run.failures > 0 and run.failures_by_cause.get("503", 0) > 0, run.failures_by_cause
    assert run.service_errors.get("address_unavailable", 0) > 0 and run.address_unavailable > 0
    assert run.time_wait_peak is not None and run.time_wait_peak > 200
    # The doctor, on an app it does not know, finds the range full: exhausted now, whatever the rate it saw.
    assert run.doctor is not None and "connection churn" in run.doctor.status and run.doctor.exhausted, run.doctor
    assert not [ns for ns in lab_namespaces() if f"-{os.getpid()}-" in ns]


def _toml(value) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def test_each_command_the_lab_cannot_run_is_refused_in_one_line_with_nothing_left(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "tinyapp.py").write_text(TINY_APP)
    stubborn = project / "stubborn.py"
    # Ignores SIGINT and SIGTERM, and leaves a child of its own in the group: only SIGKILL to the group ends both.
    stubborn.write_text(
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen([sys.executable, '-c', 'import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)', 'stubborn-child'])\n"
        "print('listening elsewhere', flush=True); time.sleep(120)\n"
    )
    cases = {
        "exits": ('python -c "import sys; print(\\"bad settings\\"); sys.exit(3)"', {}, "exited with status 3"),
        "not-found": ("no-such-server --bind {bind}", {}, "no-such-server not found"),
        "setup-fails": (
            "gunicorn tinyapp:application -b {bind}",
            {"setup": "python -c \"import sys; print('migration failed'); sys.exit(1)\""},
            "migration failed",
        ),
        "elsewhere": ("python stubborn.py", {"ready_timeout": 3}, "did not answer"),
    }
    # A venv without gunicorn: the one on PATH would run another Python, without the project's packages.
    bare, elsewhere = tmp_path / "bare", tmp_path / "elsewhere"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    elsewhere.mkdir()
    (elsewhere / "gunicorn").write_text(f"#!{sys.executable}\nimport gunicorn\n")
    (elsewhere / "gunicorn").chmod(0o755)
    path = f"{bare}/bin:{elsewhere}:/usr/bin:/bin"
    cases["venv-without-gunicorn"] = (
        "gunicorn tinyapp:application -b {bind}",
        {"python": str(bare), "env": {"PATH": path}},
        "gunicorn is not in",
    )
    tables = []
    for name, (command, extra, _) in cases.items():
        keys = "".join(f"\n{k} = {_toml(v)}" for k, v in {"python": str(VENV), **extra}.items())
        tables.append(f'[scenario.{name}]\napp = {json.dumps(command)}\napp_dir = "project"\npath = "/health"{keys}\n')
    toml = tmp_path / "mine.toml"
    toml.write_text("\n".join(tables))
    started = time.monotonic()
    _, runs = _run(tmp_path, toml, concurrency=[5], duration=2, topology="loopback", doctor=False)
    for run, (name, (_, _, cause)) in zip(runs, cases.items()):
        assert run.scenario == name and run.error is not None, run
        assert "\n" not in run.error and cause in run.error, run.error
        assert run.requests == 0
    assert _ours_left(str(tmp_path)) == [] and not _ours_left("stubborn-child")
    assert time.monotonic() - started < 120


def test_an_own_service_that_never_gets_ready_is_stopped_with_its_whole_process_group(tmp_path):
    (tmp_path / "tinyapp.py").write_text(TINY_APP)
    # gunicorn under a shell, so the group holds a shell, a master and its workers; /nothing answers 404.
    spec = AppSpec(
        "sh -c 'gunicorn tinyapp:application -b {bind} -w 2 & wait'",
        app_dir=tmp_path,
        path="/health",
        ready_path="/nothing",
        python=VENV,
        ready_timeout=5,
    )
    values = placeholders("127.0.0.1", free_port(), "postgresql://u:pw@127.0.0.1:1/x")
    service = AppService(spec, values, tmp_path / "service.log")
    with pytest.raises(ServiceError) as refused:
        service.start()
    assert "answered 404" in str(refused.value) and "\n" not in str(refused.value)
    assert _ours_left("tinyapp:application") == []


def test_a_running_service_is_driven_and_its_database_read_with_the_figures_not_taken_said(
    tmp_path, run_gunicorn, postgres, database
):
    server = run_gunicorn("gthread", workers=1, HEALTHZ_POOL_CLASS="NullPool")
    url = postgres.url_for(database)
    config = LabConfig(
        scenarios=[running_service(server.base_url + "/api/v1/healthz/")],
        concurrency=[5],
        duration=3,
        topology="loopback",
        database_url=url,
        output=tmp_path / "out",
    )
    lab = Lab(config, Progress(io.StringIO()))
    (run,) = lab.run()
    assert run.error is None and run.requests > 20 and run.failures == 0
    # NullPool: a session per request, read from the service's own database.
    assert run.sessions_opened >= run.requests
    assert run.time_wait_peak is None and run.cpu_seconds["gunicorn"] is None and run.doctor is None
    assert any("healthz doctor" in item for item in run.not_taken)
    assert server.process.poll() is None  # the lab never stops what it did not start
    data = report.read(tmp_path / "out")
    assert "Not taken for target" in report.verdict_table(data)
    assert (
        f"--target {server.base_url}/api/v1/healthz/" in run.commands["rerun"]
        and "--scenario" not in run.commands["rerun"]
    )


@pytest.mark.parametrize(
    "args, says",
    [
        (["--target", "http://127.0.0.1:9/x"], "--target needs --database-url"),
        (["--target", "ftp://x/", "--database-url", "postgresql://u:pw@127.0.0.1:1/x"], "expected an http(s) URL"),
        (["--target", "http://127.0.0.1:9/x", "-s", "eventlet-nullpool"], "drop --scenario"),
        (["--app", "gunicorn x -b {nope}"], "unknown placeholder"),
    ],
)
def test_a_lab_command_it_cannot_run_is_refused_in_one_line(tmp_path, args, says):
    result = CliRunner().invoke(cli.main, ["lab", "run", *args, "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert says in last and "pw" not in result.output
    assert not (tmp_path / "out").exists()


def test_load_processes_spread_the_same_users_over_locust_workers(tmp_path, run_gunicorn, postgres, database):
    server = run_gunicorn("gthread", workers=1)
    config = LabConfig(
        scenarios=[running_service(server.base_url + "/api/v1/healthz/")],
        concurrency=[12],
        duration=4,
        topology="loopback",
        database_url=postgres.url_for(database),
        output=tmp_path / "out",
        load_processes=2,
    )
    (run,) = Lab(config, Progress(io.StringIO())).run()
    assert run.error is None and run.requests > 50 and run.failures == 0
    assert max(h["users"] or 0 for h in run.history) == 12  # the master's total over both workers
    assert "--processes 2" in run.commands["locust"]
    generator = run.load_generator
    assert generator.processes == 2 and generator.busiest_share is not None and 0 < generator.busiest_share <= 1.05


def test_a_venv_this_user_cannot_read_is_one_line_not_a_traceback(tmp_path, monkeypatch):
    venv = tmp_path / "locked-venv"
    venv.mkdir()
    real_exists = Path.exists

    def exists(self, *args, **kwargs):
        if str(self).startswith(str(venv)):
            raise PermissionError(13, "Permission denied", str(self))
        return real_exists(self, *args, **kwargs)

    # As root every folder is readable: a venv of another user's, with no read bit, is what this stands for.
    monkeypatch.setattr(Path, "exists", exists)
    with pytest.raises(AppSpecError, match=r"python .*locked-venv: cannot be read \(Permission denied\)"):
        AppSpec("gunicorn x:app -b {bind}", python=venv)
