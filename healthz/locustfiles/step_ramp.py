"""A step ramp: ``--step-users`` more users every ``--step-seconds``, ``--steps`` times, then stop.

Selected on the command line by adding this file (``locust -f "$(healthz locustfile --step-ramp)"``)
or from the environment with ``HEALTHZ_SHAPE=step-ramp``. Without it, locust's own ``-u``/``-r``/
``--run-time`` (or the web UI) set the load, unchanged.
"""

from __future__ import annotations

from locust import LoadTestShape


def stages(step_users: int, step_seconds: float, steps: int) -> list[tuple[float, int]]:
    """The ramp as data: ``(end time in seconds, users)`` for each step, in order."""
    if step_users < 1 or step_seconds <= 0 or steps < 1:
        raise ValueError(
            f"step ramp needs step_users >= 1, step_seconds > 0, steps >= 1; got {step_users}, {step_seconds}, {steps}"
        )
    return [(step_seconds * k, step_users * k) for k in range(1, steps + 1)]


class StepRamp(LoadTestShape):
    """Users rise by ``--step-users`` every ``--step-seconds`` for ``--steps`` steps; each step spawns
    its users within one second, like a new wave of clients. ``tick()`` returns None after the last."""

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options
        plan = stages(options.step_users, options.step_seconds, options.steps)
        elapsed = self.get_run_time()
        for end, users in plan:
            if elapsed < end:
                return users, float(max(users, 1))
        return None
