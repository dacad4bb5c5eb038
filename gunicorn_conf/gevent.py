"""Shim for ``gunicorn wsgi:app -c gunicorn_conf/gevent.py`` in a checkout; the config ships in the
package as ``gunicorn -c python:healthz.gunicorn_conf.gevent healthz.wsgi:app``."""

from healthz.gunicorn_conf.gevent import *  # noqa: F403
