"""``make bench``: how fast the health check is, against the stack's own ceiling and the database's limit.

Laid out as the benchmark it runs: :mod:`bench.wrk` and :mod:`bench.pgbench` drive the load,
:mod:`bench.statements` counts what PostgreSQL received, :mod:`bench.cases` says what is measured,
:mod:`bench.runner` runs it, :mod:`bench.targets` judges it and :mod:`bench.table` prints it.
Nothing here is imported by the service.
"""
