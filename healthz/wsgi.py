"""WSGI entry point: ``gunicorn -c python:healthz.gunicorn_conf.gevent healthz.wsgi:app``.

Settings come from the environment (:mod:`healthz.config`); a bad one raises before the first request.
"""

from healthz import create_app

app = create_app()
