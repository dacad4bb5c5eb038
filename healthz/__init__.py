"""healthz: the report's health-check endpoint on Flask and a configurable SQLAlchemy pool."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .config import Settings, SettingsError

if TYPE_CHECKING:  # Flask is imported when an app is made, not when gunicorn reads its config
    from flask import Flask

__version__ = "0.1.0"
__all__ = ["create_app", "Settings", "SettingsError", "__version__"]


def create_app(settings: Settings | Mapping[str, Any] | None = None) -> Flask:
    """Build the app.

    ``settings`` may be a :class:`Settings`, or a mapping of field names (``pool_size=3``)
    laid over the environment's settings, each validated as its variable would be; None reads
    the environment alone. A bad value raises :class:`SettingsError`.
    """
    if not isinstance(settings, Settings):
        settings = Settings.from_env(overrides=settings or {})
    from flask import Flask

    app = Flask(__name__)
    app.config["HEALTHZ_SETTINGS"] = settings

    from . import db, views

    db.init_app(app, settings)
    views.init_app(app, db.get_engine(app), settings)
    return app
