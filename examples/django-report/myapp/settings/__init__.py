"""The report's settings, read from the environment as its ``DATABASES`` block reads them.

* ``POSTGRES_DB``, ``POSTGRES_USER``, ``POSTGRES_PASSWORD``, ``POSTGRES_HOST``, ``POSTGRES_PORT``:
  the database (the lab's placeholders fill them);
* ``CONN_MAX_AGE``: seconds a connection is kept, ``0`` (Django's default, a connection per request)
  or the report's ``600``;
* ``DB_POOL_MAX_SIZE``: above 0, Django 5.1+'s built-in pool (psycopg 3 and psycopg_pool) with that
  many connections per worker process, ``DB_POOL_MIN_SIZE`` kept open and ``DB_POOL_TIMEOUT``
  seconds to wait for one; ``CONN_MAX_AGE`` must then be 0 (Django refuses it otherwise);
* ``DB_DRIVER``: ``psycopg2`` (the report's, and the only one eventlet makes cooperative) or
  ``psycopg`` (3). Django takes psycopg 3 whenever it is importable, so ``psycopg2`` hides it.
"""

import os
import sys

DEBUG = False
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "the-report-lab-needs-no-secret")
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "myapp.urls"
WSGI_APPLICATION = "myapp.wsgi.application"
USE_TZ = True
INSTALLED_APPS = ["rest_framework", "roles"]
MIDDLEWARE: list[str] = []
# No auth apps: the report's view needs none, and DRF's defaults would import them.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}

DRIVER = os.environ.get("DB_DRIVER", "psycopg2")
if DRIVER not in ("psycopg2", "psycopg"):
    raise SystemExit(f"DB_DRIVER={DRIVER!r}: expected psycopg2 or psycopg")
if DRIVER == "psycopg2":
    sys.modules["psycopg"] = None  # Django's postgresql backend then imports psycopg2

POOL_MAX_SIZE = int(os.environ.get("DB_POOL_MAX_SIZE", "0"))
OPTIONS: dict = {}
if POOL_MAX_SIZE > 0:
    if DRIVER != "psycopg":
        raise SystemExit("DB_POOL_MAX_SIZE needs DB_DRIVER=psycopg: Django's pool is psycopg 3's")
    OPTIONS["pool"] = {
        "min_size": int(os.environ.get("DB_POOL_MIN_SIZE", str(POOL_MAX_SIZE))),
        "max_size": POOL_MAX_SIZE,
        "timeout": float(os.environ.get("DB_POOL_TIMEOUT", "10")),
    }

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("POSTGRES_DB", "healthz"),
        "USER": os.environ.get("POSTGRES_USER", "healthz"),
        "PASSWORD": os.environ.get("POSTGRES_PASSWORD", ""),
        "HOST": os.environ.get("POSTGRES_HOST", "127.0.0.1"),
        "PORT": os.environ.get("POSTGRES_PORT", "5432"),
        "CONN_MAX_AGE": int(os.environ.get("CONN_MAX_AGE", "0")),
        "OPTIONS": OPTIONS,
    }
}

# The view's one warning line per failure, on stderr beside gunicorn's own log.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"roles": {"handlers": ["console"], "level": "WARNING"}},
}
