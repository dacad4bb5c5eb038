# healthz on the gevent worker, built from the wheel, run as a non-root user.
#   docker build -t healthz .
#   docker run -e DATABASE_URL=postgresql://USER:PASSWORD@HOST:5432/DB -p 8000:8000 healthz
# Settings are the environment variables of docs/settings in the README (HEALTHZ_*, GUNICORN_*,
# PORT, WEB_CONCURRENCY); a bad one stops the container before it binds, naming the variable.

FROM python:3.13-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY healthz ./healthz
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.13-slim
RUN useradd --create-home --uid 10001 healthz
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/healthz-*.whl)[gevent]" && rm -rf /wheels
USER 10001
# PORT binds 0.0.0.0 (GUNICORN_BIND or GUNICORN_PORT, if set, come first); workers from WEB_CONCURRENCY.
# 503, not the report's 499, on a database error: load balancers and probes act on 5xx.
# livez also on 8001, a listener apart from the request workers, for the liveness probe.
ENV PORT=8000 \
    WEB_CONCURRENCY=2 \
    HEALTHZ_ERROR_STATUS=503 \
    HEALTHZ_LIVENESS_BIND=0.0.0.0:8001 \
    PYTHONUNBUFFERED=1
EXPOSE 8000 8001
CMD ["gunicorn", "-c", "python:healthz.gunicorn_conf.gevent", "healthz.wsgi:app"]
