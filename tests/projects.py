"""Team projects the tests write outside the repository, as a team writes them (their framework's
defaults, managed models, real migrations), nothing shaped for healthz: a Flask-SQLAlchemy service
and a Django one, each with a health endpoint that counts ``Role`` rows as the report's does."""

from __future__ import annotations

import hashlib
import os
import textwrap
from pathlib import Path

FLASK_APP = """
import os

from flask import Flask, jsonify
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Role(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(64), unique=True, nullable=False)


def create_app():
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
    # Flask-SQLAlchemy's defaults unless the deployment sizes the pool.
    if "POOL_SIZE" in os.environ:
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
            "pool_size": int(os.environ["POOL_SIZE"]),
            "max_overflow": int(os.environ.get("MAX_OVERFLOW", "10")),
        }
    db.init_app(app)

    @app.get("/health")
    def health():
        return jsonify(status="ok", roles=db.session.query(Role).count())

    @app.cli.command("init-db")
    def init_db():
        db.create_all()

    return app


app = create_app()
"""

DJANGO_FILES = {
    "manage.py": """
        #!/usr/bin/env python
        import os
        import sys

        if __name__ == "__main__":
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
            from django.core.management import execute_from_command_line

            execute_from_command_line(sys.argv)
        """,
    "mysite/__init__.py": "",
    "mysite/settings.py": """
        import os

        SECRET_KEY = "not-a-secret"
        DEBUG = False
        ALLOWED_HOSTS = ["*"]
        INSTALLED_APPS = ["roles"]
        MIDDLEWARE = []
        ROOT_URLCONF = "mysite.urls"
        WSGI_APPLICATION = "mysite.wsgi.application"
        USE_TZ = True
        DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
        DATABASES = {
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": os.environ["PGDATABASE"],
                "USER": os.environ["PGUSER"],
                "PASSWORD": os.environ["PGPASSWORD"],
                "HOST": os.environ["PGHOST"],
                "PORT": os.environ["PGPORT"],
                "CONN_MAX_AGE": int(os.environ.get("CONN_MAX_AGE", "0")),
            }
        }
        """,
    "mysite/urls.py": """
        from django.urls import path

        from roles.views import health

        urlpatterns = [path("health/", health)]
        """,
    "mysite/wsgi.py": """
        import os

        from django.core.wsgi import get_wsgi_application

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
        application = get_wsgi_application()
        """,
    "roles/__init__.py": "",
    "roles/models.py": """
        from django.db import models


        class Role(models.Model):
            name = models.CharField(max_length=64, unique=True)
        """,
    "roles/views.py": """
        from django.http import JsonResponse

        from roles.models import Role


        def health(request):
            return JsonResponse({"status": "ok", "roles": Role.objects.count()})
        """,
    "roles/migrations/__init__.py": "",
    "roles/migrations/0001_initial.py": """
        from django.db import migrations, models


        class Migration(migrations.Migration):
            initial = True
            dependencies = []
            operations = [
                migrations.CreateModel(
                    name="Role",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("name", models.CharField(max_length=64, unique=True)),
                    ],
                ),
            ]
        """,
}


def flask_project(folder: Path) -> Path:
    """A Flask-SQLAlchemy 3 service (``app:app``, ``flask --app app init-db``) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app.py").write_text(FLASK_APP.lstrip())
    return folder


def django_project(folder: Path) -> Path:
    """A Django project (``mysite.wsgi:application``, ``manage.py migrate``) in ``folder``."""
    for name, text in DJANGO_FILES.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return folder


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` by path, with a hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` (a venv: too big to hash each time) by path, with its size and
    mtime; bytecode caches aside, which any test's interpreter beside may write into a shared venv."""
    out = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            st = os.lstat(os.path.join(root, name))
            out[os.path.join(root, name)] = (st.st_size, st.st_mtime_ns)
    return out
