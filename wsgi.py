"""WSGI entry point: ``gunicorn wsgi:app -c gunicorn_conf/<worker>.py``. Settings come from the environment."""

from healthz import create_app

app = create_app()
