"""The pytest plugin as a team uses it: from the conftest.py of a project in a folder of its own, run
by a pytest of its own (pytester, in a subprocess: the plugin comes from the installed entry point)."""

from __future__ import annotations

import textwrap

from projects import flask_project

pytest_plugins = ["pytester"]

CONFTEST = """
    import sys
    from pathlib import Path

    import pytest


    @pytest.fixture
    def shop_check(healthz_check):
        def run(**options):
            return healthz_check(
                app="gunicorn app:app -k gthread --threads 16 -w 2 -b {bind}",
                app_dir=Path(__file__).parent / "shop",
                python=sys.prefix,
                setup="flask --app app init-db",
                path="/health",
                clients=100,
                requests=2000,
                **options,
            )

        return run
    """

TESTS = """
    def test_a_sized_pool_laid_over_the_unchanged_app_keeps_its_connections(shop_check):
        result = shop_check(sqlalchemy_pool="pool_size=16,max_overflow=0")
        assert result.passed, result
        assert result.sessions_per_request <= 0.02 and result.failed == 0 and result.requests >= 2000

    def test_a_fresh_database_for_each_test(healthz_database, healthz_postgres):
        assert healthz_database.rsplit("/", 1)[1].startswith("check_") and healthz_database != healthz_postgres.url
    """


def test_a_teams_conftest_checks_its_own_service(pytester):
    flask_project(pytester.path / "shop")
    pytester.makeconftest(textwrap.dedent(CONFTEST))
    pytester.makepyfile(test_shop=textwrap.dedent(TESTS))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(passed=2)


def test_the_plugin_is_there_and_does_nothing_unless_a_test_asks(pytester):
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    # What the plain session imported of healthz, written as it ends.
    pytester.makeconftest(
        "import sys\n\n\ndef pytest_sessionfinish(session):\n"
        "    names = sorted(m for m in sys.modules if m.startswith('healthz'))\n"
        "    open('imported.txt', 'w').write(' '.join(names))\n"
    )
    listed = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")
    assert "healthz_check" in listed.stdout.str() and "healthz_postgres" in listed.stdout.str()
    plain = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    plain.assert_outcomes(passed=1)
    imported = (pytester.path / "imported.txt").read_text().split()
    assert "healthz.pytest_plugin" in imported, "loaded from its entry point"
    assert not [m for m in imported if m.startswith(("healthz.lab", "healthz.postgres", "healthz.harness"))], imported
