"""The locustfiles, shipped with the package: ``locust -f "$(healthz locustfile)"`` runs
:mod:`healthcheck`; ``healthz locustfile --step-ramp`` adds the step ramp."""

from pathlib import Path

#: The directory holding the locustfiles, wherever the package is installed.
DIRECTORY = Path(__file__).resolve().parent
HEALTHCHECK = DIRECTORY / "healthcheck.py"
STEP_RAMP = DIRECTORY / "step_ramp.py"
