"""Shim for ``gunicorn wsgi:app`` in a checkout; the package's entry point is ``healthz.wsgi:app``."""

from healthz.wsgi import app  # noqa: F401
