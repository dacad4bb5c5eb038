# healthz: `make lab` and `make test` work on a fresh machine; they build .venv themselves.
# PYTHON: the first of python3, python3.13 ... python3.10 that is Python 3.10 or newer (or set it).
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11 python3.10; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null && { echo $$p; break; }; done)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test test-fast lint format quick lab lab-django lab-hosts faults bench serve clean python

install: $(VENV)/.installed

python:
	@test -n "$(PYTHON)" || { echo "make: healthz needs Python 3.10 or newer: none of python3, python3.13 ... python3.10 is; set PYTHON=/path/to/python3.x" >&2; exit 2; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "make: PYTHON=$(PYTHON) is $$($(PYTHON) -V 2>&1); healthz needs Python 3.10 or newer" >&2; exit 2; }

$(VENV)/.installed: pyproject.toml | python
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[lab,django,dev]'
	touch $@

# Two at a time (pytest-xdist, one file per worker so a module's shared lab run is made once, the
# longest first: tests/conftest.py's LONGEST_FIRST, kept by --no-loadscope-reorder), then
# the `serial` tests alone: those that count this host's own sockets (another test's churn would be
# in their count) or judge figures that another test on the same cores would move. (Three workers
# took the parallel phase from 564 s to 506 s here, but three of four fresh-clone runs then failed a
# test whose figures depend on speed: the cores were full.)
test: install
	$(BIN)/pytest -n 2 --dist loadfile --no-loadscope-reorder -m "not serial"; a=$$?; $(BIN)/pytest -m serial; b=$$?; exit $$((a > b ? a : b))

# The inner loop: every test that starts no child process (no PostgreSQL, gunicorn, locust or
# command); the others are skipped where they would start one. Well under a minute.
test-fast: install
	$(BIN)/pytest --no-processes -q

# ruff's formatter and linter, with the rules pyproject.toml chooses; `make format` applies both.
lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The answer in under a minute: a connection per request, the default pool and a bounded pool at
# 500 clients for 8 s (netns as root, else loopback), with the same answer block and settings as make lab.
QUICK_ARGS ?=
quick: install
	$(BIN)/healthz lab run --quick $(QUICK_ARGS)

# The default comparison: every scenario at 100 and 1,000 clients for 10 s each, in the netns
# topology when run as root (it reproduces the port exhaustion), else on loopback; about 5 minutes.
LAB_ARGS ?= --concurrency 100,1000 --duration 10
lab: install
	$(BIN)/healthz lab run $(LAB_ARGS)

# The report's own stack (examples/django-report: Django, DRF, gunicorn.conf.py) as it is, then its
# code with Django's fixes laid over it where it fails (try_fixes), beside the Flask scenarios that
# stand for it and Django's pool, at 500 and 1,000 clients for 10 s each; netns as root, else
# loopback; about 5 minutes. The report answers for the Django project first, the pairs below.
DJANGO_ARGS ?= --concurrency 500,1000 --duration 10
DJANGO_SCENARIOS ?= -s django-eventlet -s eventlet-nullpool -s eventlet-singleton -s gthread-queuepool \
	-s django-pool -s django-pool-gevent -s gevent-queuepool-sized
lab-django: install
	$(BIN)/healthz lab run --scenarios-file examples/django-report/scenarios.toml $(DJANGO_SCENARIOS) $(DJANGO_ARGS)

# Beyond one host: 3 application hosts against one PostgreSQL with max_connections 50, the in-process
# pools beside PgBouncer in each placement, at 300 clients for 10 s each; netns (root) only.
HOSTS_ARGS ?= --hosts 3 --max-connections 50 --concurrency 300 --duration 10 \
	-s eventlet-nullpool -s eventlet-queuepool-sized -s eventlet-queuepool-pgbouncer \
	-s eventlet-nullpool-pgbouncer -s eventlet-nullpool-pgbouncer-unix -s eventlet-nullpool-pgbouncer-db
lab-hosts: install
	$(BIN)/healthz lab run --topology netns $(HOSTS_ARGS)

# Every fault against the four default fault scenarios under steady load; about 15 minutes.
FAULTS_ARGS ?=
faults: install
	$(BIN)/healthz lab faults $(FAULTS_ARGS)

# The benchmark: wrk on livez and healthz for every worker class and pool, pgbench on the same
# query, the crowd, fixed rates and the report's Django, each target met or not; fetches wrk when
# missing; about 9 minutes.
BENCH_ARGS ?=
bench: install
	$(BIN)/healthz bench $(BENCH_ARGS)

# The service under eventlet on 127.0.0.1:8000; a throwaway PostgreSQL unless DATABASE_URL is set.
serve: install
	$(BIN)/healthz serve --worker-class $${WORKER_CLASS:-eventlet}

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
