"""What a run says about itself: the command that repeats one step, chosen by the service's own
option, and the commands a user can paste, passwords masked. No process is started here."""

from __future__ import annotations

import shlex
from pathlib import Path

from healthz.lab.config import LabConfig
from healthz.lab.own_service import placeholders
from healthz.lab.record import Record
from healthz.lab.scenarios import DEFAULTS, own_service, running_service
from healthz.lab.topology import Loopback

SECRET = "s3cret-pw"


def config(tmp_path: Path, scenario, **changes) -> LabConfig:
    return LabConfig(scenarios=[scenario], concurrency=[100, 500], output=tmp_path, **changes)


def test_the_rerun_command_repeats_one_step_with_the_runs_options(tmp_path):
    scenario = DEFAULTS["eventlet-queuepool-sized"]
    cfg = config(tmp_path, scenario, topology="netns", ports=300, hosts=2, duration=5, rate=200)
    args = shlex.split(Record(cfg).rerun_command(scenario, 500, "close"))
    assert args[:3] == ["healthz", "lab", "run"]
    options = dict(zip(args[3::2], args[4::2]))
    assert options["--scenario"] == "eventlet-queuepool-sized" and options["--concurrency"] == "500"
    assert options["--ports"] == "300" and options["--hosts"] == "2" and options["--rate"] == "200"
    assert options["--duration"] == "5" and options["--connection"] == "close"


def test_a_database_url_is_repeated_masked(tmp_path):
    scenario = running_service("http://127.0.0.1:9/health")
    url = f"postgresql://app:{SECRET}@db.internal:5432/app"
    line = Record(config(tmp_path, scenario, database_url=url)).rerun_command(scenario, 100, "keep-alive")
    assert SECRET not in line and "--target http://127.0.0.1:9/health" in line and "app:***@db.internal" in line


def test_an_own_services_commands_are_written_beside_the_run_without_its_password(tmp_path):
    scenario = own_service("gunicorn tinyapp:application -b {bind}")
    spec = scenario.service.spec
    here = Loopback()
    url = f"postgresql://healthz:{SECRET}@127.0.0.1:5432/healthz"
    service, env = scenario.service.make(scenario, here, here.hosts[0], url, tmp_path)
    assert service.values == placeholders("127.0.0.1", service.port, url)
    record = Record(config(tmp_path, scenario))
    commands = record.commands(scenario, service, env, here, ["locust", "-f", "x.py"], tmp_path, "healthz lab run ...")
    assert list(commands) == ["rerun", "service", "locust"]
    assert (
        commands["service"].startswith(f"cd {spec.app_dir} && env ")
        and "gunicorn tinyapp:application" in commands["service"]
    )
    written = (tmp_path / "commands.txt").read_text()
    assert "# service\n" in written and "# locust\nlocust -f x.py" in written
    assert SECRET not in written
    record.write_configs()
    assert not (tmp_path / "gunicorn-config.txt").exists(), "only our gunicorn's configuration is printed"
