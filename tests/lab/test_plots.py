"""The plots' series and styles, from results as the runner writes them (the PNGs themselves in test_report)."""

from __future__ import annotations

from helpers import bouncer
from helpers import lab_run as run

from healthz.lab import plots

NULLPOOL = ("NullPool", 5, 10)


def test_plots_leave_missing_values_out_and_show_the_service_side_of_pgbouncer():
    missing = run("no-p99", p99_ms=None)
    through = run("bounced", pool=NULLPOOL, sessions=10, pgbouncer=bouncer("app-unix", logins=2900))
    series = {
        (name, extra): points
        for name, points, extra in plots.series([missing, through], ["no-p99", "bounced"], "p99_ms")
    }
    assert series[("no-p99", False)] == [] and series[("bounced", False)] == [(500, 30)]
    sessions = plots.series([through], ["bounced"], "sessions_per_second")
    assert [(extra, points) for _, points, extra in sessions] == [(False, [(500, 1.0)]), (True, [(500, 290.0)])]
    names = [f"s{i}" for i in range(15)]
    styles = plots.styles(names)
    assert len({(tuple(s["color"]), s["marker"]) for s in styles.values()}) == 15
    assert len({tuple(s["color"]) for s in styles.values()}) == 15, "tab20 has a colour for each of 15 scenarios"
