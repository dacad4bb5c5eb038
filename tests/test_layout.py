"""The layout docs/layout.md draws, held: who may import whom, and the sizes that keep each part
readable (no class over 250 lines, no module over 600, no function over 60)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "healthz"
SERVICE = ["config", "db", "gate", "views", "errors", "liveness", "metrics", "models", "wsgi"]
RENDERERS = ["lab/report", "lab/tables", "lab/plots", "lab/render", "lab/fault_report"]


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved against its package."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("name", SERVICE + [f"gunicorn_conf/{n}" for n in ("__init__", "eventlet", "gthread")])
def test_the_service_imports_no_tooling(name):
    tooling = ("healthz.harness", "healthz.lab", "healthz.bench", "healthz.postgres", "healthz.service")
    used = imports(PACKAGE / f"{name}.py")
    assert not [m for m in used if m.startswith(tooling)], name


@pytest.mark.parametrize("name", RENDERERS)
def test_renderers_read_stored_results_and_start_nothing(name):
    used = imports(PACKAGE / f"{name}.py")
    starts = ("healthz.harness", "healthz.lab.runner", "healthz.lab.rig", "healthz.service", "subprocess")
    assert not [m for m in used if m.startswith(starts)], name


def test_the_harness_builds_on_the_service_config_alone():
    for path in (PACKAGE / "harness").glob("*.py"):
        healthz = {m for m in imports(path) if m.startswith("healthz")}
        assert healthz <= {"healthz.config", "healthz.config.mask_password", "healthz.harness"} | {
            m for m in healthz if m.startswith("healthz.harness")
        }, path


def _spans(tree: ast.AST, kind: type) -> list[tuple[str, int]]:
    return [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree) if isinstance(node, kind)]


def test_no_module_class_or_function_outgrows_what_a_reader_holds():
    too_long = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        tree = ast.parse(text)
        name = path.relative_to(PACKAGE)
        if len(text.splitlines()) > 600:
            too_long.append(f"{name}: {len(text.splitlines())} lines")
        too_long += [f"{name}: class {n} {size} lines" for n, size in _spans(tree, ast.ClassDef) if size > 250]
        functions = _spans(tree, ast.FunctionDef) + _spans(tree, ast.AsyncFunctionDef)
        too_long += [f"{name}: {n}() {size} lines" for n, size in functions if size > 60]
    assert too_long == []
