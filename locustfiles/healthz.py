"""Shim for ``locust -f locustfiles/healthz.py --host URL`` in a checkout; the locustfile ships in the
package, where ``locust -f "$(healthz locustfile)"`` finds it.

locust imports this file as a module named ``healthz``, after the file, which hides the package of
that name in this process: so the package's locustfile is loaded by its path, not imported, and its
names (the user class, its options and listeners) are taken into this module for locust to find.
"""

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parent.parent / "healthz" / "locustfiles" / "healthcheck.py"
# The locustfile adds the step ramp from its own folder (HEALTHZ_SHAPE=step-ramp).
sys.path.insert(0, str(_PATH.parent))
_spec = importlib.util.spec_from_file_location("healthz_locustfile", _PATH)
_module = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _module
_spec.loader.exec_module(_module)
globals().update({name: value for name, value in vars(_module).items() if not name.startswith("__")})
