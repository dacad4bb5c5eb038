"""``make bench`` (``healthz bench``): how fast the health check is, against the stack's own ceiling and the database's limit.

Laid out as the benchmark it runs: :mod:`healthz.bench.wrk` and :mod:`healthz.bench.pgbench` drive the load,
:mod:`healthz.bench.statements` counts what PostgreSQL received, :mod:`healthz.bench.cases` says what is measured,
:mod:`healthz.bench.runner` runs it, :mod:`healthz.bench.targets` judges it and :mod:`healthz.bench.table` prints it.
Nothing here is imported by the service.
"""
