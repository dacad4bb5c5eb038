"""sync: one request at a time per worker process, the baseline with no concurrency inside a worker.
threads is pinned to 1: gunicorn would otherwise switch to gthread."""

from healthz.gunicorn_conf import *  # noqa: F401,F403  bind, workers, timeouts, hooks

worker_class = "sync"
threads = 1
validate(worker_class)  # noqa: F405
