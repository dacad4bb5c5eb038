"""What a scenario serves: each kind's own answers (how it is chosen again, what is not measured of it,
which keys it refuses), and the unstarted parts it makes for a host. Nothing is started here."""

from __future__ import annotations

from pathlib import Path

import pytest

from healthz.lab.own_service import AppService, AppSpec, RunningService
from healthz.lab.scenarios import DEFAULTS, ScenarioError, parse_spec, running_service, select
from healthz.lab.scenarios import own_service as own_scenario
from healthz.lab.services import NOT_TAKEN_FOR_TARGET, LabService, OwnService, RunningTarget
from healthz.lab.topology import Loopback
from healthz.service import Gunicorn

KINDS = {
    "lab": DEFAULTS["eventlet-queuepool-sized"],
    "own": own_scenario("gunicorn tinyapp:application -b {bind}", path="/health"),
    "target": running_service("http://127.0.0.1:9/health"),
}


def test_each_scenario_holds_one_kind_and_the_kind_answers_for_it():
    lab, own, target = KINDS.values()
    assert isinstance(lab.service, LabService) and not lab.own_service
    assert isinstance(own.service, OwnService) and own.own_service
    assert isinstance(target.service, RunningTarget) and target.own_service
    assert [s.path for s in KINDS.values()] == ["/api/v1/healthz/", "/health", "/health"]
    assert [s.service.started for s in KINDS.values()] == [True, True, False]
    assert [s.service.not_taken for s in KINDS.values()] == [(), (), NOT_TAKEN_FOR_TARGET]
    assert [s.service.doctor_runs_here for s in KINDS.values()] == [True, True, False]
    assert [s.service.backends_settle_s > 0 for s in KINDS.values()] == [True, True, False]
    assert [s.service.prints_config for s in KINDS.values()] == [True, False, False]


def test_each_kind_is_chosen_again_by_its_own_option():
    lab, own, target = KINDS.values()
    assert lab.service.selector(lab, from_files=False) == ["--scenario", "eventlet-queuepool-sized"]
    assert own.service.selector(own, from_files=False) == [
        "--app",
        "gunicorn tinyapp:application -b {bind}",
        "--path",
        "/health",
    ]
    assert own.service.selector(own, from_files=True) == ["--scenario", "app"]
    assert target.service.selector(target, from_files=False) == ["--target", "http://127.0.0.1:9/health"]


def test_app_keys_turn_ours_into_the_teams_and_are_refused_for_a_running_target(tmp_path):
    (tmp_path / "proj").mkdir()
    mine = parse_spec(f"mine:app=gunicorn x:app -b {{bind}},app_dir={tmp_path / 'proj'}", DEFAULTS)
    assert isinstance(mine.service, OwnService) and mine.worker_class == "unknown"
    changed = mine.with_changes("mine2", {"setup": "python manage.py migrate"}, root=tmp_path)
    assert changed.service.spec.setup == "python manage.py migrate" and changed.service.has_setup
    assert changed.service.spec.command == mine.service.spec.command
    with pytest.raises(ScenarioError, match="need.* app"):
        parse_spec("lonely:setup=true", DEFAULTS)
    with pytest.raises(ScenarioError, match="running --target"):
        KINDS["target"].with_changes("t2", {"setup": "true"})
    bounced = mine.with_changes("mine3", {"pgbouncer": "app-unix"})  # its address reaches the command's env
    assert bounced.pgbouncer.pooled and bounced.service.spec == mine.service.spec
    with pytest.raises(ScenarioError, match="running service has its own"):
        KINDS["target"].with_changes("t3", {"pgbouncer": "app"})


def test_to_dict_keeps_app_and_target_as_results_files_have_them():
    lab, own, target = (s.to_dict() for s in KINDS.values())
    assert "service" not in lab and lab["app"] is None and lab["target"] is None
    assert own["app"]["command"] == "gunicorn tinyapp:application -b {bind}" and own["target"] is None
    assert target["app"] is None and target["target"] == "http://127.0.0.1:9/health"


def test_each_kind_makes_its_own_unstarted_part_for_a_host(tmp_path):
    here = Loopback()
    url = "postgresql://healthz:secret@127.0.0.1:5432/healthz"
    parts = {name: s.service.make(s, here, here.hosts[0], url, tmp_path) for name, s in KINDS.items()}
    gunicorn, env = parts["lab"]
    assert isinstance(gunicorn, Gunicorn) and gunicorn.process is None and env["DATABASE_URL"] == url
    assert gunicorn.logfile == tmp_path / "gunicorn.log"
    app, _ = parts["own"]
    assert isinstance(app, AppService) and app.process is None and app.logfile == tmp_path / "service.log"
    assert app.values["bind"].startswith("127.0.0.1:")
    commands = KINDS["own"].service.commands(KINDS["own"], app, {"DATABASE_URL": url}, here)
    assert "secret" not in commands["service"] and "gunicorn tinyapp:application" in commands["service"]
    running, env = parts["target"]
    assert isinstance(running, RunningService) and env == {}
    assert KINDS["target"].service.commands(KINDS["target"], running, env, here) == {
        "target": "http://127.0.0.1:9/health"
    }


def test_a_file_of_own_services_runs_only_them(tmp_path):
    file = tmp_path / "mine.toml"
    file.write_text('[scenario.mine]\napp = "gunicorn x:app -b {bind}"\napp_dir = "."\n')
    chosen = select(files=[file])
    assert [s.name for s in chosen] == ["mine"]
    assert chosen[0].service.spec == AppSpec("gunicorn x:app -b {bind}", app_dir=Path(tmp_path).resolve())
