"""The packages whose versions decide what the lab and the bench measure, and the versions installed."""

from __future__ import annotations

from importlib import metadata

#: Listed, in this order, with every lab report and every bench result.
PACKAGES = (
    "healthz",
    "flask",
    "sqlalchemy",
    "psycopg2-binary",
    "gunicorn",
    "eventlet",
    "gevent",
    "psycogreen",
    "prometheus-client",
    "locust",
    # The report's stack, for examples/django-report (the [django] extra), when installed.
    "django",
    "djangorestframework",
    "psycopg",
)


def installed(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """``{package: version}`` of those of ``packages`` that are installed, in their order."""
    found = {}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found
