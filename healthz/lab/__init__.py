"""The lab: the experiment that drives the service under load and judges what it measured.

It needs the ``lab`` extra (locust drives the load, matplotlib draws the plots); the service,
``healthz plan`` and ``healthz doctor`` do not, and never import this package.
"""

from __future__ import annotations

import importlib.util

#: The packages the ``lab`` extra brings that the lab cannot run without.
LAB_PACKAGES = ("locust", "matplotlib")


class LabExtraMissing(ImportError):
    """The ``lab`` extra is not installed; the message is one line saying what to install."""


def require_extra() -> None:
    """Raise :class:`LabExtraMissing` unless every package of :data:`LAB_PACKAGES` is importable."""
    missing = [name for name in LAB_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise LabExtraMissing(
            f"the healthz lab needs the lab extra ({', '.join(missing)} not installed): pip install 'healthz[lab]'"
        )
