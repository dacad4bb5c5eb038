"""The lab report's PNG plots: each figure against concurrency, a line per scenario (bars when
there are fewer than three steps), and the client ports held toward PostgreSQL over time at the
highest step. Only renders :class:`RunFigures`; matplotlib is imported when a plot is drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from healthz.lab import verdict
from healthz.lab.figures import RunFigures
from healthz.plan import DatabaseLimits

#: ``(figure, axis label, file name)`` of each plot against concurrency.
PLOTS = (
    ("rps", "requests/s", "requests_per_second.png"),
    ("p99_ms", "p99 latency (ms)", "p99_latency.png"),
    ("error_rate", "failed requests (%)", "error_rate.png"),
    ("sessions_per_second", "sessions opened per second", "sessions_per_second.png"),
    ("backends_peak", "peak backends", "peak_backends.png"),
)
PORTS_PLOT = "ports_in_use.png"
#: One marker per scenario, cycled beside tab20's 20 colours, so no two scenarios look alike.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p", "d", "8", "H")
#: A series: ``(scenario, [(step, value)], extra)``; ``extra`` marks the service's connections to PgBouncer.
Series = tuple[str, list[tuple[int, float]], bool]


def styles(scenarios: list[str]) -> dict[str, dict[str, Any]]:
    """A colour and a marker per scenario, the same in every plot."""
    from matplotlib import colormaps

    paired = colormaps["tab20"].colors  # dark and light of each hue: the darks first, so neighbours differ
    colours = paired[0::2] + paired[1::2]
    return {
        name: {"color": colours[i % len(colours)], "marker": MARKERS[i % len(MARKERS)]}
        for i, name in enumerate(scenarios)
    }


def series(measured: list[RunFigures], scenarios: list[str], key: str) -> list[Series]:
    """A series per scenario for plot ``key``, missing values left out. On the sessions plot, a
    PgBouncer run adds the service's connections to PgBouncer (``extra``)."""
    scale = 100 if key == "error_rate" else 1
    out = []
    for scenario in scenarios:
        runs = sorted((r for r in measured if r.scenario == scenario), key=lambda r: r.concurrency)
        points = [(r.concurrency, getattr(r, key) * scale) for r in runs if getattr(r, key) is not None]
        out.append((scenario, points, False))
        if key == "sessions_per_second":
            extra = [(r.concurrency, v) for r in runs if (v := r.pgbouncer_logins_per_second) is not None]
            if extra:
                out.append((scenario, extra, True))
    return out


def write(results: list[RunFigures], folder: Path, limits: DatabaseLimits | None = None) -> list[tuple[str, str]]:
    """Every plot into ``folder``, the legend outside each; the budget on the backends plot; the
    service's connections to PgBouncer beside PostgreSQL's sessions. Returns ``(file name, title)`` pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = verdict.measured(results)
    scenarios = list(dict.fromkeys(r.scenario for r in measured))
    style = styles(scenarios)
    steps = sorted({r.concurrency for r in measured})
    made: list[tuple[str, str]] = []
    for key, label, name in PLOTS:
        fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
        drawn = series(measured, scenarios, key)
        _against_concurrency(ax, drawn, style, steps)
        if key == "backends_peak" and limits and limits.available:
            ax.axhline(
                limits.available,
                color="red",
                linestyle="--",
                linewidth=1,
                label=f"budget: max_connections - reserved ({limits.available:,})",
            )
        ax.set_ylabel(label + (" (log scale)" if ax.get_yscale() == "symlog" else ""))
        ax.set_title(f"{label} against concurrency{_pgbouncer_note(key, drawn, len(steps) < 3)}")
        _save(plt, fig, ax, folder / name)
        made.append((name, f"{label} against concurrency"))
    if measured and any(r.time_wait_peak or r.established_peak for r in measured):
        top = max(r.concurrency for r in measured)
        fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
        _ports_over_time(ax, [r for r in measured if r.concurrency == top], style, top)
        _save(plt, fig, ax, folder / PORTS_PLOT)
        made.append(
            (PORTS_PLOT, f"Client ports held toward PostgreSQL (TIME_WAIT + ESTABLISHED) over time at {top:,} clients")
        )
    return made


def _against_concurrency(ax, drawn: list[Series], style: dict[str, dict[str, Any]], steps: list[int]) -> None:
    """Draw ``drawn`` against the steps: grouped bars under three steps, else a line per series;
    a log scale when a few large values would flatten the rest."""
    bars = len(steps) < 3
    width = 0.8 / max(1, len(drawn))
    for i, (scenario, points, extra) in enumerate(drawn):
        if not points:
            continue
        colour, text = style[scenario]["color"], f"{scenario}: service to PgBouncer" if extra else scenario
        if bars:
            xs = [steps.index(x) - 0.4 + width * (i + 0.5) for x, _ in points]
            edge = {"hatch": "//", "edgecolor": "black"} if extra else {"edgecolor": "white"}
            made = ax.bar(xs, [y for _, y in points], width, color=colour, label=text, linewidth=0.3, **edge)
            labels = [verdict.number(y, 0 if y >= 10 or float(y).is_integer() else 1) for _, y in points]
            ax.bar_label(made, labels=labels, fontsize=6, rotation=90, padding=2)
        else:
            line = "--" if extra else "-"
            ax.plot(*zip(*points), marker=style[scenario]["marker"], color=colour, label=text, linestyle=line)
    values = [y for _, points, _ in drawn for _, y in points if y > 0]
    if values and max(values) / min(values) > 100:
        ax.set_yscale("symlog", linthresh=max(1.0, min(values)))
    if bars and values:  # room above the tallest bar for its label
        ax.set_ylim(top=max(values) * (4 if ax.get_yscale() == "symlog" else 1.15))
    if bars:
        ax.set_xticks(range(len(steps)), [f"{s:,}" for s in steps])
    ax.set_xlabel("concurrent clients")
    ax.grid(True, alpha=0.3, axis="y" if bars else "both")


def _pgbouncer_note(key: str, drawn: list[Series], bars: bool) -> str:
    """The sessions plot's second title line when PgBouncer rows add the service's connections to it."""
    if key != "sessions_per_second" or not any(extra for *_, extra in drawn):
        return ""
    return "\nPgBouncer rows: PostgreSQL's sessions, and the service's connections to PgBouncer " + (
        "(hatched)" if bars else "(dashed)"
    )


def _ports_over_time(ax, runs: list[RunFigures], style: dict[str, dict[str, Any]], top: int) -> None:
    """Ports held toward PostgreSQL against time, a line per run, with the port range as a line."""
    ports = None
    for r in runs:
        points = [(s.t, s.ports_held) for s in r.samples if s.ports_held is not None]
        if points:
            ax.plot(
                *zip(*points),
                color=style[r.scenario]["color"],
                marker=style[r.scenario]["marker"],
                markevery=max(1, len(points) // 8),
                label=r.scenario,
            )
        ports = r.ports or ports
    if ports:
        ax.axhline(ports, color="red", linestyle="--", linewidth=1, label=f"ports in range ({ports:,})")
    ax.set_xlabel("seconds")
    ax.set_ylabel("client ports held toward PostgreSQL")
    ax.set_title(f"Ports held (TIME_WAIT + ESTABLISHED) at {top:,} clients")
    ax.grid(True, alpha=0.3)


def _save(plt, fig, ax, path: Path) -> None:
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
