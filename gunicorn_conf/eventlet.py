"""Shim for ``gunicorn wsgi:app -c gunicorn_conf/eventlet.py`` in a checkout; the config ships in the
package as ``gunicorn -c python:healthz.gunicorn_conf.eventlet healthz.wsgi:app``."""

from healthz.gunicorn_conf.eventlet import *  # noqa: F403
