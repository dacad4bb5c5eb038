"""gthread: a fixed pool of GUNICORN_THREADS threads per worker, the setup the report found working.
Connections are bounded by workers x threads however many clients connect."""

from healthz.gunicorn_conf import *  # noqa: F401,F403  bind, workers, timeouts, hooks

worker_class = "gthread"
validate(worker_class)  # noqa: F405
