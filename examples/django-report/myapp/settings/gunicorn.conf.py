"""The report's gunicorn.conf.py, with its three settings read from the environment:
``GUNICORN_PORT`` (bound on 0.0.0.0, as the report does), ``WORKER_CLASS`` (the report's eventlet)
and ``WORKERS`` (the report's 6); ``THREADS`` for gthread."""

import os

GUNICORN_PORT = os.environ.get("GUNICORN_PORT", "8000")

bind = f"0.0.0.0:{GUNICORN_PORT}"
worker_class = os.environ.get("WORKER_CLASS", "eventlet")
workers = int(os.environ.get("WORKERS", "6"))
threads = int(os.environ.get("THREADS", "1"))
