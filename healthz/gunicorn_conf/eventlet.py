"""eventlet: the report's setup. One greenlet per accepted client connection, so with a new TCP
connection per request (ab without -k) every request runs in a fresh greenlet.
eventlet is deprecated (gunicorn 26 removed the worker); kept to reproduce the report."""

from healthz.gunicorn_conf import *  # noqa: F401,F403  bind, workers, timeouts, hooks

worker_class = "eventlet"
validate(worker_class)  # noqa: F405
