"""The README and docs/: every relative link resolves inside the repository (anchors included), none
leaves it, no temporary path is cited, and the README stays short enough to read in five minutes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[1]
PAGES = [CHECKOUT / "README.md", *sorted((CHECKOUT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of ``page``."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", page.read_text(), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(CHECKOUT).as_posix())
def test_every_link_resolves_inside_the_repository(page):
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.is_relative_to(CHECKOUT), f"{target} leaves the repository"
        assert resolved.exists(), f"{target} does not exist"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved), f"{target}: no such heading"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(CHECKOUT).as_posix())
def test_no_temporary_path_or_checkout_outside_the_repository(page):
    text = page.read_text()
    if page.name != "original-report.md":
        assert not re.search(r"/tmp/[\w-]", text), "a temporary path"
    assert "../shared" not in text


@pytest.mark.parametrize(
    "path", sorted((CHECKOUT / "docs").glob("example-*/*")), ids=lambda p: p.relative_to(CHECKOUT).as_posix()
)
def test_example_reports_cite_no_temporary_path(path):
    if path.suffix in (".md", ".json", ".csv"):
        assert not re.search(r"/tmp/[\w-]", path.read_text()), "a temporary path"


def test_the_readme_is_short_and_starts_with_the_card_then_the_commands():
    text = (CHECKOUT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    commands = text.index("## The commands")
    assert text.index("gunicorn wsgi:app") < commands < text.index("## The answer")
    assert text.index("make quick", commands) < text.index("make lab", commands) < text.index("make test", commands)
