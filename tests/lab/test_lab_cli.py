"""``healthz lab``: list, run's refusals (each one line, before anything starts) and report."""

from __future__ import annotations

import json

from click.testing import CliRunner
from test_report import META, RESULTS

from healthz.cli import main
from healthz.lab.scenarios import DEFAULTS


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_list_shows_every_scenario_and_what_it_stands_for():
    result = invoke("lab", "list")
    assert result.exit_code == 0, result.output
    for name, scenario in DEFAULTS.items():
        assert f"{name}\n    {scenario.summary()}\n    {scenario.description}" in result.output


def test_every_lab_command_has_help_with_an_example():
    for command in ("list", "run", "faults", "report"):
        result = invoke("lab", command, "--help")
        assert result.exit_code == 0 and "Example:" in result.output


def test_run_refuses_bad_input_in_one_line(tmp_path):
    cases = [
        (["-s", "nope"], "unknown scenario 'nope'"),
        (["-c", "100,lots"], "expected comma-separated integers from 1 to 20000"),
        (["-s", "eventlet-nullpool:pool_size=-3"], "HEALTHZ_POOL_SIZE='-3' is not accepted"),
        (
            ["--topology", "netns", "--database-url", "postgresql://u:pw@127.0.0.1/db"],
            "cannot be used with --topology netns",
        ),
        (["--scenarios-file", str(tmp_path / "missing.toml")], "No such file"),
        (["--topology", "loopback", "--hosts", "3"], "--hosts 3 needs --topology netns"),
        (["--hosts", "9"], "Invalid value for '--hosts'"),
        (["-s", "eventlet-nullpool:pgbouncer=sidecar"], "pgbouncer 'sidecar' is not one of none, app, app-unix, db"),
        (
            ["-s", "eventlet-nullpool-pgbouncer:pgbouncer_pool_mode=statement"],
            "pgbouncer_pool_mode 'statement' is not one of",
        ),
        (
            ["--quick", "-s", "eventlet-nullpool"],
            "--quick runs its own three scenarios at 500 clients: drop --scenario",
        ),
        (["--quick", "-c", "100"], "drop --concurrency"),
        (["--load-workers", "2", "--load-processes", "2"], "--load-processes and --load-workers both spread"),
        (["--load-workers", "65"], "Invalid value for '--load-workers'"),
    ]
    for args, message in cases:
        result = invoke("lab", "run", "-o", str(tmp_path / "out"), *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output and "pw@" not in result.output
    assert not (tmp_path / "out").exists()


def test_faults_refuse_bad_input_in_one_line(tmp_path):
    cases = [
        (
            ["-f", "db-crash"],
            "unknown fault 'db-crash': choose from db-restart-fast, db-restart-immediate, too-many-clients",
        ),
        (["-s", "nope"], "unknown scenario 'nope'"),
        (["-s", "eventlet-nullpool:pool_timeout=soon"], "HEALTHZ_POOL_TIMEOUT='soon' is not accepted"),
        (["-u", "0"], "Invalid value for '--users'"),
        (["--topology", "everywhere"], "Invalid value for '--topology'"),
        (["--setup", "python manage.py migrate"], "--setup describe(s) --app's service: add --app COMMAND"),
        (["--app", "gunicorn x:app -b {bnd}"], "unknown placeholder(s) {bnd}"),
    ]
    for args, message in cases:
        result = invoke("lab", "faults", "-o", str(tmp_path / "out"), *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_netns_without_root_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    for command in ("run", "faults"):
        result = invoke("lab", command, "--topology", "netns", "-o", str(tmp_path / "out"))
        assert result.exit_code == 2, result.output
        assert (
            "--topology netns needs root (it creates network namespaces): run as root or use --topology loopback"
            in result.output
        )
        assert len(result.output.strip().splitlines()[-1]) < 200
    result = invoke("lab", "faults", "--topology", "auto", "-f", "nope", "-o", str(tmp_path / "out"))
    assert "unknown fault" in result.output  # auto never needs root
    assert not (tmp_path / "out").exists()


def test_run_refuses_an_unreachable_database_without_its_password(tmp_path):
    result = invoke(
        "lab",
        "run",
        "-s",
        "eventlet-nullpool",
        "-o",
        str(tmp_path / "out"),
        "--database-url",
        "postgresql://healthz:s3cret-pw@127.0.0.1:1/healthz",
    )
    assert result.exit_code == 1
    assert "topology auto: loopback, because --database-url is given" in result.output
    assert "it writes nothing" in result.output
    assert 'is not reachable: connection to server at "127.0.0.1", port 1 failed: Connection refused' in result.output
    assert "s3cret-pw" not in result.output and not (tmp_path / "out").exists()


def test_report_remakes_a_report(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"meta": META, "results": [r.to_dict() for r in RESULTS]}))
    result = invoke("lab", "report", str(tmp_path))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("Does connection pooling alone fix it?"), result.output
    verdict = lines[lines.index("Verdict") + 1 :]
    assert verdict[0].split()[:2] == ["eventlet-nullpool", "FAILED"]
    assert (tmp_path / "report.html").exists()


def test_report_needs_results(tmp_path):
    result = invoke("lab", "report", str(tmp_path))
    assert (
        result.exit_code == 2
        and "has no results.json or faults.json: give a folder written by healthz lab run or healthz lab faults"
        in result.output
    )


def test_quick_answers_from_its_three_setups(tmp_path):
    """``lab run --quick`` on loopback: one step of the three setups, the answer block first.
    (``--load-workers`` in the lab: test_runner's recommended rerun, on two netns load hosts.)"""
    import subprocess
    import sys
    from pathlib import Path

    healthz = Path(sys.executable).parent / "healthz"
    out = tmp_path / "quick"
    result = subprocess.run(
        # 6 s: 500 users spawn in about a second alone; beside two other test workers a 4 s step once
        # ended before its first request did.
        [str(healthz), "lab", "run", "--quick", "-d", "6", "-t", "loopback", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((out / "results.json").read_text())
    runs = data["results"]
    assert [r["scenario"] for r in runs] == [
        "eventlet-nullpool",
        "eventlet-queuepool-default",
        "eventlet-queuepool-sized",
    ]
    assert {r["concurrency"] for r in runs} == {500} and all(r["requests"] > 0 for r in runs)
    assert data["meta"]["config"]["duration"] == 6
    assert (out / "report.md").read_text().splitlines()[2].startswith("**Does connection pooling alone fix it?")
