"""gthread: a fixed pool of GUNICORN_THREADS threads per worker, the setup the report found working.
Connections are bounded by workers x threads however many clients connect.

No keep-alive unless GUNICORN_KEEPALIVE asks for it: a gthread worker that stops (a reload, a
recycle) closes the keep-alive connections it holds idle, and a client that has just sent its next
request on one loses it (measured with 50 keep-alive clients that do not retry: 11 requests lost
per reload, 10 per recycle; none with keepalive = 0: docs/faults.md). Each response then ends its
connection, as gunicorn's sync worker does."""

from healthz.gunicorn_conf import *  # noqa: F401,F403  bind, workers, timeouts, hooks

worker_class = "gthread"
keepalive = env_int("GUNICORN_KEEPALIVE", 0, minimum=0)  # noqa: F405
validate(worker_class)  # noqa: F405
