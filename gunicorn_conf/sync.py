"""Shim for ``gunicorn wsgi:app -c gunicorn_conf/sync.py`` in a checkout; the config ships in the
package as ``gunicorn -c python:healthz.gunicorn_conf.sync healthz.wsgi:app``."""

from healthz.gunicorn_conf.sync import *  # noqa: F403
