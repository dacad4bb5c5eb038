"""gevent: the supported green worker. Like eventlet, one greenlet per client connection; unlike
eventlet, gevent installs no psycopg2 wait callback: HEALTHZ_GREEN_DRIVER=auto adds psycogreen's."""

from healthz.gunicorn_conf import *  # noqa: F401,F403  bind, workers, timeouts, hooks

worker_class = "gevent"
validate(worker_class)  # noqa: F405
