"""Settings and hooks shared by the gunicorn configs ``healthz.gunicorn_conf.<worker>``.

Plain module-level gunicorn settings, named as gunicorn names them, read from ``GUNICORN_*``
variables, then from the platform conventions gunicorn itself reads (``PORT``, ``WEB_CONCURRENCY``);
hooks are named functions that log what they did. Each worker module star-imports this one, sets
``worker_class`` and calls :func:`validate`, which stops gunicorn with one line on stderr before
it binds when a setting is bad or the worker's package is not installed.

    gunicorn -c python:healthz.gunicorn_conf.gevent healthz.wsgi:app

Imports only the standard library and :mod:`healthz.config` at load time: the master must not
import SQLAlchemy or psycopg2 before a green worker has monkey-patched.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import sys
import tempfile

from healthz.config import GREEN_WORKERS, Settings, SettingsError, parse_integer


def _refuse(message: str) -> None:
    sys.stderr.write(f"healthz: {message}\n")
    sys.stderr.flush()
    raise SystemExit(2)


def env_int(variable: str, default: int, minimum: int = 1) -> int:
    """An integer from ``variable``, or ``default`` when unset; a bad value stops gunicorn."""
    raw = os.environ.get(variable, "")
    if not raw.strip():
        return default
    try:
        return parse_integer(variable, raw, minimum)
    except SettingsError as exc:
        _refuse(str(exc))


def _port(variable: str) -> int | None:
    raw = os.environ.get(variable, "")
    if not raw.strip():
        return None
    try:
        port = parse_integer(variable, raw, 1, "a port from 1 to 65535")
    except SettingsError as exc:
        _refuse(str(exc))
    if port > 65535:
        _refuse(str(SettingsError(variable, raw, "a port from 1 to 65535")))
    return port


def _bind() -> list[str]:
    """``GUNICORN_BIND`` (comma-separated), else ``127.0.0.1:$GUNICORN_PORT``, else ``0.0.0.0:$PORT``
    as gunicorn and container platforms read ``PORT``, else ``127.0.0.1:8000``."""
    address = os.environ.get("GUNICORN_BIND", "").strip()
    if address:
        return address.split(",")
    port = _port("GUNICORN_PORT")
    if port is not None:
        return [f"127.0.0.1:{port}"]
    port = _port("PORT")
    if port is not None:
        return [f"0.0.0.0:{port}"]
    return ["127.0.0.1:8000"]


# Server socket: loopback unless told otherwise; the report bound 0.0.0.0:$GUNICORN_PORT, a
# container binds 0.0.0.0:$PORT.
bind = _bind()
backlog = env_int("GUNICORN_BACKLOG", 2048)

# Worker processes: a couple per core (WEB_CONCURRENCY, as gunicorn and Heroku-style platforms
# read it, when GUNICORN_WORKERS is unset). threads applies to gthread, worker_connections to the
# green workers (the most greenlets, i.e. concurrent client connections, per worker).
workers = env_int("GUNICORN_WORKERS", env_int("WEB_CONCURRENCY", 2))
threads = env_int("GUNICORN_THREADS", 8)
worker_connections = env_int("GUNICORN_WORKER_CONNECTIONS", 1000)
timeout = env_int("GUNICORN_TIMEOUT", 30)
graceful_timeout = env_int("GUNICORN_GRACEFUL_TIMEOUT", 10)
keepalive = env_int("GUNICORN_KEEPALIVE", 2, minimum=0)

# Logging: errors to stderr; access log only when asked (it costs throughput under load).
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
proc_name = "healthz"

# gunicorn 25's control socket has one default path per user: parallel lab servers would fight
# over it. Older gunicorn ignores the name.
control_socket_disable = True

_settings: Settings | None = None
_own_metrics_dir: str | None = None


def validate(worker_class: str) -> Settings:
    """Parse the healthz settings once, in the master, before gunicorn binds.

    Stops gunicorn (exit status 2) with one line naming the variable, its value and what is
    accepted. Also refuses ``HEALTHZ_GREEN_DRIVER=on`` for a worker class that is not green.
    """
    global _settings, _own_metrics_dir
    _require_worker(worker_class)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        _refuse(str(exc))
    if settings.green_driver == "on" and worker_class not in GREEN_WORKERS:
        _refuse(str(SettingsError("HEALTHZ_GREEN_DRIVER", "on", f"auto or off for the {worker_class} worker")))
    if settings.driver == "psycopg":
        if worker_class == "eventlet":
            _refuse(
                str(
                    SettingsError(
                        "HEALTHZ_DRIVER", "psycopg", "psycopg2 under eventlet (psycopg 3 does not support eventlet)"
                    )
                )
            )
        if importlib.util.find_spec("psycopg") is None:
            _refuse("HEALTHZ_DRIVER=psycopg needs psycopg 3: pip install 'healthz[psycopg]'")
    if settings.liveness_bind:
        _check_liveness_bind(settings.liveness_bind)
    if settings.metrics and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Set before any worker imports prometheus_client, so every worker writes its values here.
        _own_metrics_dir = tempfile.mkdtemp(prefix="healthz-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = _own_metrics_dir
        atexit.register(_remove_metrics_dir, os.getpid())
    _settings = settings
    return settings


def _check_liveness_bind(address: str) -> None:
    """Stop in one line when ``HEALTHZ_LIVENESS_BIND`` is one of gunicorn's own binds or cannot be bound
    here, as each worker's listener will bind it."""
    from healthz import liveness

    if address in bind:
        _refuse(str(SettingsError("HEALTHZ_LIVENESS_BIND", address, "an address other than gunicorn's bind")))
    try:
        liveness.bound(address).close()
    except OSError as exc:
        _refuse(f"HEALTHZ_LIVENESS_BIND={address} cannot be bound: {exc.strerror or exc}")


#: The extra that installs each green worker's package (gunicorn's own workers need none).
_WORKER_EXTRAS = {"eventlet": "eventlet", "gevent": "gevent"}
#: gunicorn 26 removed the eventlet worker.
_EVENTLET_GUNICORN_BELOW = 26


def _require_worker(worker_class: str) -> None:
    """Stop in one line when ``worker_class`` cannot run here: its package is missing, or (eventlet)
    the installed gunicorn no longer has the worker."""
    extra = _WORKER_EXTRAS.get(worker_class)
    if extra is None:
        return
    if importlib.util.find_spec(worker_class) is None:
        _refuse(f"the {worker_class} worker needs the {worker_class} package: pip install 'healthz[{extra}]'")
    if worker_class == "eventlet":
        installed = importlib.metadata.version("gunicorn")
        if int(installed.split(".")[0]) >= _EVENTLET_GUNICORN_BELOW:
            _refuse(
                f"the eventlet worker needs gunicorn<{_EVENTLET_GUNICORN_BELOW} (gunicorn {installed} removed it): "
                f"pip install 'healthz[eventlet]', or use the gevent worker"
            )


def on_starting(server):
    """Start from empty metric files: values left by an earlier run would be summed in."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if _settings is not None and _settings.metrics and directory:
        os.makedirs(directory, exist_ok=True)
        for name in os.listdir(directory):
            if name.endswith(".db"):
                os.unlink(os.path.join(directory, name))
    if _settings is not None:
        server.log.info("healthz settings: %s", _settings.describe())


def post_fork(server, worker):
    """Give the new worker its own pools: nothing inherited from the master is reused."""
    from healthz import db

    db.after_fork()
    server.log.debug("healthz worker %s: engines inherited across fork disposed", worker.pid)


def post_worker_init(worker):
    """Apply the green driver after the worker's monkey-patching (eventlet's installs a
    psycopg2 wait callback of its own, which ``off`` must remove) and log what is in force."""
    from healthz import db

    worker.log.error_log.addFilter(client_errors_in_one_line)
    mode = _settings.green_driver if _settings is not None else "auto"
    driver = _settings.driver if _settings is not None else "psycopg2"
    # psycogreen's callback is psycopg2's; psycopg 3 waits through gevent's patched selectors itself.
    in_force = db.apply_green_driver(mode if driver == "psycopg2" else "off")
    worker.log.info(
        "healthz worker %s: driver %s, green driver %s (HEALTHZ_GREEN_DRIVER=%s)", worker.pid, driver, in_force, mode
    )
    if _settings is not None and _settings.liveness_bind:
        from healthz import liveness

        liveness.start(_settings.liveness_bind)
        worker.log.info(
            "healthz worker %s: livez also on %s, apart from the request workers", worker.pid, _settings.liveness_bind
        )


def client_errors_in_one_line(record: logging.LogRecord) -> bool:
    """Log filter: a malformed request that gunicorn's parser rejects only after the response (a
    bad chunk in a body the view never read) is the client's error, not the server's; log it as
    one warning line instead of an error with a stack trace."""
    exc_type = record.exc_info[0] if record.exc_info else None
    if exc_type is not None and exc_type.__module__ == "gunicorn.http.errors":
        record.msg = f"{record.getMessage()} Client error: {exc_type.__name__}: {record.exc_info[1]}"
        record.args, record.exc_info, record.exc_text = (), None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


def worker_exit(server, worker):
    """Close the worker's pooled connections so its backends end with it."""
    from healthz import db

    db.dispose_all()


def child_exit(server, worker):
    """Drop a dead worker's live gauges from the summed metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def _remove_metrics_dir(creator: int) -> None:
    # Workers inherit this handler through fork; only the master that made the directory removes it.
    if _own_metrics_dir and os.getpid() == creator:
        shutil.rmtree(_own_metrics_dir, ignore_errors=True)
