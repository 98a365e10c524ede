# syntax=docker/dockerfile:1
#
# fullctl-tasks image: the package with its web (gunicorn) and operator (kopf, kubernetes)
# extras, plus the example Django project in /app/example. One image runs every role:
#   web        gunicorn example_project.wsgi --bind 0.0.0.0:8000 --worker-tmp-dir /tmp  (default)
#   poller     python manage.py fullctl_poll_tasks --processes N --grace-period G --health-port 8081
#   operator   python -m fullctl_operator --standalone --namespace NS --liveness=http://0.0.0.0:8080/healthz
#   migrations python manage.py migrate --noinput
# Runs as uid 10001 with a read-only root filesystem; only /tmp needs to be writable. Static files
# are collected at build time into /app/static (DJANGO_STATIC_ROOT) and served by WhiteNoise.
#
# Build: docker build -t fullctl-tasks:0.1.0 .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Only what the package build reads (see .dockerignore).
COPY pyproject.toml README.md ./
COPY django_fullctl ./django_fullctl
COPY fullctl ./fullctl
COPY operator ./operator
# binary: psycopg's wheel carries libpq, so the final stage needs no system packages.
RUN pip install ".[web,operator,binary]" \
 && python -m compileall -q /opt/venv/lib

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="fullctl-tasks" \
      org.opencontainers.image.description="Django task queue on PostgreSQL, its pollers, web app and Kubernetes operator" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 fullctl \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin fullctl

COPY --from=builder /opt/venv /opt/venv
COPY example /app/example
# bytecode now: at run time the root filesystem is read-only and nothing writes .pyc files
RUN python -m compileall -q /app/example

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app/example \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=example_project.settings \
    DJANGO_STATIC_ROOT=/app/static \
    HOME=/tmp

WORKDIR /app/example
# Static files (the admin's CSS and JS), collected now into the image, read-only at run time:
# hashed, compressed copies and their manifest, which WhiteNoise serves from the web app.
# collectstatic reads the settings only; it opens no database.
RUN python manage.py collectstatic --noinput --verbosity 0
USER 10001:10001

# 8000: web (gunicorn), 8081: poller liveness, 8080: operator liveness
EXPOSE 8000 8080 8081

CMD ["gunicorn", "example_project.wsgi", "--bind", "0.0.0.0:8000", "--worker-tmp-dir", "/tmp"]
