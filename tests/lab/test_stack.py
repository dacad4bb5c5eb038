"""A team's stack read from its venv and command: gunicorn's resolved settings and Django's database
settings, on the projects the tests write, and the parsing on hand-made text."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from projects import django_project, flask_project

from healthz.lab import stack
from healthz.lab.own_service import AppService, AppSpec, placeholders
from healthz.lab.services import OwnService

VENV = Path(sys.prefix)
URL = "postgresql://team:pw-not-shown@127.0.0.1:5432/team"


def read(folder: Path, command: str, **env: str) -> stack.Stack:
    spec = AppSpec(command, app_dir=folder, python=VENV, env=env)
    service = AppService(spec, placeholders("127.0.0.1", 8123, URL), folder / "service.log")
    return OwnService(spec).stack(service)


def test_gunicorns_command_and_config_are_parsed():
    assert stack.wsgi_module(["gunicorn", "-k", "eventlet", "mysite.wsgi:application", "-b", "x:1"]) == "mysite.wsgi"
    assert stack.wsgi_module(["/venv/bin/python", "-m", "gunicorn", "app:create_app()"]) == "app"
    assert stack.wsgi_module(["uvicorn", "app:app"]) is None
    printed = "worker_class                      = gthread\nworkers                           = 2\nthreads = 8\nbind = ['x:1']\n"
    assert stack.parse_print_config(printed) == {"worker_class": "gthread", "workers": 2, "threads": 8}


def test_a_django_project_is_read_as_django_with_its_database_settings(tmp_path):
    project = django_project(tmp_path / "mysite")
    found = read(project, "gunicorn mysite.wsgi:application -k eventlet -w 3 -b {bind}", CONN_MAX_AGE="600")
    assert found.framework == "Django" and found.packages["django"]
    assert found.gunicorn == {"worker_class": "eventlet", "workers": 3, "threads": 1, "worker_connections": 1000}
    assert found.django["conn_max_age"] == 600 and found.django["conn_health_checks"] is False
    assert found.django["settings"] == "mysite.settings" and found.notes == []
    assert found.line().startswith("Django ") and "CONN_MAX_AGE=600" in found.line()
    assert stack.Stack.from_dict(found.to_dict()) == found


def test_a_flask_sqlalchemy_project_is_read_as_what_its_module_imports(tmp_path):
    project = flask_project(tmp_path / "shop")
    found = read(project, "gunicorn app:app -k gthread --threads 16 -w 2 -b {bind}")
    assert found.framework == "Flask-SQLAlchemy", found.imports  # Django is in this venv too: not what it imports
    assert found.gunicorn["threads"] == 16 and found.django is None
    assert "djangorestframework" not in found.line()


def test_what_cannot_be_read_is_said_without_the_password(tmp_path):
    (tmp_path / "broken.py").write_text("import os\nraise RuntimeError('no ' + os.environ['DATABASE_URL'])\n")
    found = read(tmp_path, "gunicorn broken:app -b {bind}")
    assert found.framework == "unknown"
    assert any("broken could not be imported: RuntimeError" in note for note in found.notes), found.notes
    assert "pw-not-shown" not in " ".join(found.notes)


def test_the_interpreter_is_the_commands_own(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "gunicorn"
    script.write_text(f"#!{sys.executable}\nprint('hi')\n")
    script.chmod(0o755)
    assert stack.interpreter([sys.executable, "-m", "gunicorn", "app:app"], None) == sys.executable
    assert stack.interpreter(["gunicorn", "app:app"], str(bin_dir)) == sys.executable  # its #! line
    assert stack.interpreter(["./serve.sh"], os.environ.get("PATH")) == shutil.which("python3")


def test_the_pools_its_workers_really_made_are_in_its_line():
    engine = {"pid": 1, "database": "shop", "pool": "QueuePool", "pool_size": 5, "max_overflow": 10, "overlaid": []}
    read = stack.Stack(
        packages={"sqlalchemy": "2.0.36"}, imports=["sqlalchemy"], engines=[engine, {**engine, "pid": 2}]
    )
    assert "its engines: QueuePool(pool_size=5, max_overflow=10) x2" in read.line()
    assert stack.Stack.from_dict(read.to_dict()) == read
