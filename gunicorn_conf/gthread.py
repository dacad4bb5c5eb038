"""Shim for ``gunicorn wsgi:app -c gunicorn_conf/gthread.py`` in a checkout; the config ships in the
package as ``gunicorn -c python:healthz.gunicorn_conf.gthread healthz.wsgi:app``."""

from healthz.gunicorn_conf.gthread import *  # noqa: F403
