"""The container and cluster files, checked as far as a machine without Docker or a cluster can:
each parses, names paths, modules, routes, commands, settings and metrics that exist, and sets
values the service accepts. (The Dockerfile's install and start commands run for real in
test_packaging.)"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

import healthz.gunicorn_conf
from healthz import create_app, metrics
from healthz.cli import main
from healthz.config import ENVIRONMENT, Settings, parse_bind
from healthz.lab import nginx

CHECKOUT = Path(__file__).resolve().parents[1]
GUNICORN_VARIABLES = set(
    re.findall(r'"((?:GUNICORN|WEB)_[A-Z_]+|PORT)"', Path(healthz.gunicorn_conf.__file__).read_text())
)
KNOWN_VARIABLES = set(ENVIRONMENT.values()) | GUNICORN_VARIABLES | {"PYTHONUNBUFFERED"}
PLACEHOLDER_URL = "postgresql://healthz:pw@db:5432/healthz"


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def check_environment(env: dict[str, str]) -> None:
    """Every variable is one the service or its gunicorn config reads, and the settings validate."""
    unknown = set(env) - KNOWN_VARIABLES
    assert not unknown, f"variables nothing reads: {unknown}"
    Settings.from_env({**env, "DATABASE_URL": PLACEHOLDER_URL})
    for variable in GUNICORN_VARIABLES & set(env):
        assert env[variable].isdigit() or variable == "GUNICORN_BIND", (variable, env[variable])


def routes() -> set[str]:
    app = create_app({"database_url": PLACEHOLDER_URL})
    return {rule.rule for rule in app.url_map.iter_rules()}


def test_gunicorn_variables_are_found():
    assert {"GUNICORN_BIND", "GUNICORN_PORT", "GUNICORN_WORKERS", "PORT", "WEB_CONCURRENCY"} <= GUNICORN_VARIABLES


def test_dockerfile_copies_what_exists_and_starts_a_packaged_config():
    text = (CHECKOUT / "Dockerfile").read_text()
    for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for source in sources.split():
            assert (CHECKOUT / source).exists(), source
    final = text.split("\nFROM ")[-1]
    assert re.search(r"^USER (?!root|0\b)\S+", final, re.M), "the service runs as a non-root user"
    assert "FROM python:" in text and "-slim" in text
    cmd = json.loads(re.search(r"^CMD (.+)$", final, re.M).group(1))
    assert cmd[0] == "gunicorn"
    config = cmd[cmd.index("-c") + 1]
    assert config == "python:healthz.gunicorn_conf.gevent"
    assert importlib.util.find_spec(config.removeprefix("python:")) is not None
    assert cmd[-1] == "healthz.wsgi:app"
    env = dict(
        re.findall(r"(\w+)=(\S+)", " ".join(re.findall(r"^ENV (.+(?:\\\n.+)*)", final, re.M)).replace("\\\n", " "))
    )
    assert env["PORT"] == "8000" and "0.0.0.0" not in text.split("CMD")[-1]
    check_environment(env)
    dockerignore = (CHECKOUT / ".dockerignore").read_text().split()
    assert ".venv" in dockerignore and ".git" in dockerignore


def test_compose_runs_the_image_beside_postgresql_16_or_newer():
    (compose,) = documents(CHECKOUT / "compose.yaml")
    services = compose["services"]
    image = services["db"]["image"]
    assert image.startswith("postgres:") and int(image.split(":")[1].split("-")[0]) >= 16
    assert services["web"]["build"] == "." and services["init-db"]["build"] == "."
    command = services["init-db"]["command"]
    assert command[0] == "healthz" and command[1] in main.list_commands(None)
    for name in ("web", "init-db"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://healthz:${POSTGRES_PASSWORD")
        check_environment({k: str(v) for k, v in env.items() if k != "DATABASE_URL"})
    assert services["web"]["depends_on"]["init-db"]["condition"] == "service_completed_successfully"
    assert "/api/v1/livez/" in " ".join(services["web"]["healthcheck"]["test"])


def test_compose_puts_the_lab_measured_nginx_block_in_front_of_web():
    (compose,) = documents(CHECKOUT / "compose.yaml")
    proxy = compose["services"]["proxy"]
    assert proxy["image"].startswith("nginx:") and proxy["depends_on"] == ["web"]
    (mount,) = proxy["volumes"]
    source, target, _ = mount.split(":")
    shipped = (CHECKOUT / source).read_text()
    assert target == "/etc/nginx/conf.d/default.conf"
    # The file is the block the idle-clients fault ran, pointed at compose's web service.
    web_port = compose["services"]["web"]["ports"][0].rsplit(":", 1)[1]
    listen = proxy["ports"][0].rsplit(":", 1)[1]
    block = "".join(line for line in shipped.splitlines(keepends=True) if not line.startswith("#"))
    assert block == nginx.site(listen, f"web:{web_port}")


def test_kubernetes_probes_hit_healthz_and_livez_with_the_settings_the_service_reads():
    docs = {
        doc["kind"]: doc for path in sorted((CHECKOUT / "deploy/kubernetes").glob("*.yaml")) for doc in documents(path)
    }
    assert {"Deployment", "Service"} <= set(docs)
    (container,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    known = routes()
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    assert readiness["httpGet"]["path"] == "/api/v1/healthz/" and readiness["httpGet"]["path"] in known
    assert liveness["httpGet"]["path"] == "/api/v1/livez/" and liveness["httpGet"]["path"] in known
    # Readiness above Kubernetes' 1 s default: the benchmark's p99 at 100 connections reaches 653 ms on its
    # worst run. Liveness on its own listener, which the faults measure within 1 s.
    assert readiness["timeoutSeconds"] >= 2 and liveness["timeoutSeconds"] >= 1
    assert (
        liveness["failureThreshold"] * liveness["periodSeconds"]
        > readiness["failureThreshold"] * readiness["periodSeconds"]
    )
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env.pop("DATABASE_URL") is None, "DATABASE_URL comes from a Secret, never a literal"
    assert int(env["PORT"]) == ports[readiness["httpGet"]["port"]]
    assert parse_bind("HEALTHZ_LIVENESS_BIND", env["HEALTHZ_LIVENESS_BIND"])[1] == ports[liveness["httpGet"]["port"]]
    check_environment(env)
    annotations = docs["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in known


def test_alert_rules_name_metrics_the_service_exports(monkeypatch):
    (rules,) = documents(CHECKOUT / "deploy/prometheus/alerts.yaml")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    exported = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", metrics.render().decode(), re.M):
        exported |= {name, f"{name}_bucket"} if kind == "histogram" else {name}
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    assert {"HealthzPoolSaturated", "HealthzTimeWaitNearPortRange"} <= set(alerts)
    for name, rule in alerts.items():
        used = set(re.findall(r"\bhealthz_[a-z_]+", rule["expr"]))
        assert used <= exported, (name, used - exported)
        assert rule["annotations"]["description"], name
    assert "node_sockstat_TCP_tw" in alerts["HealthzTimeWaitNearPortRange"]["expr"]


@pytest.mark.parametrize("path", ["compose.yaml", "deploy/kubernetes/deployment.yaml", "deploy/prometheus/alerts.yaml"])
def test_every_deployment_file_says_how_to_use_it(path):
    assert (CHECKOUT / path).read_text().startswith("#")
