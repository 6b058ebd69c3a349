# Two commands do everything on a fresh machine (only Python 3.11 and a compiler needed):
#   make run    installs into .venv, migrates, creates the operator, runs the whole stack
#   make test   installs into .venv and runs the test suite
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: install run test lint format check-deploy check-deploy-ci vendor bench clean

$(VENV)/.created:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; set PYTHON=python3"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip wheel
	touch $@

# What the app needs to run, and on top of it what the tests and benchmarks need.
$(VENV)/.installed-base: $(VENV)/.created requirements/base.txt
	$(PIP) install --quiet -r requirements/base.txt
	touch $@

$(VENV)/.installed: $(VENV)/.installed-base requirements/test.txt
	$(PIP) install --quiet -r requirements/test.txt
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed-base
	$(PY) manage.py migrate --noinput
	$(PY) manage.py ensure_operator
	PORT=$(PORT) $(PY) -m tradebaas.supervisor --port $(PORT)

test: install
	DJANGO_SETTINGS_MODULE=tradebaas.settings.test $(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

check-deploy: install
	DJANGO_SETTINGS_MODULE=tradebaas.settings.production $(PY) manage.py check --deploy --fail-level WARNING

# CI: production settings with throw-away values must pass `check --deploy` with no warnings.
check-deploy-ci: install
	DJANGO_SETTINGS_MODULE=tradebaas.settings.production \
	SECRET_KEY=ci-$$(head -c 48 /dev/urandom | base64 | tr -dc 'a-zA-Z0-9' | head -c 60) \
	ALLOWED_HOSTS=trade.example.com CREDENTIALS_KEYS=lhMf7hrCrD6JbgQh4l6x_9uXfMD9ovdZbkhzyAcBGmE= \
	$(PY) manage.py check --deploy --fail-level WARNING

# Front-end libraries from the npm registry, pinned in package.json, copied into static/vendor/.
vendor:
	npm ci --no-audit --no-fund
	cp node_modules/htmx.org/dist/htmx.min.js static/vendor/htmx-2.0.11.min.js
	cp node_modules/htmx-ext-ws/ws.js static/vendor/htmx-ext-ws-2.0.4.js
	cp node_modules/lightweight-charts/dist/lightweight-charts.standalone.production.js static/vendor/lightweight-charts-4.2.3.js

bench: install
	for f in bench/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) staticfiles .pytest_cache
