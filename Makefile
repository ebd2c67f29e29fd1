# Clairvora backend. Two commands on a fresh machine:
#   make dev    serve the API on 127.0.0.1:8787 (local D1, demo data, offline)
#   make test   run every test
SHELL := /bin/bash
.DEFAULT_GOAL := help
NODE ?= node
PYTHON ?= python3
ENV ?=
PORT ?= 8787
WRANGLER := $(NODE) node_modules/wrangler/bin/wrangler.js
STATE = .wrangler/state-$(if $(ENV),$(ENV),local)
DB = clairvora-db$(if $(ENV),-$(ENV),)
ENV_FLAG = $(if $(ENV),--env $(ENV),)
PIP_TARGET = $(PYTHON) -m pip install -q --no-deps --no-compile --python-version 3.13 --platform any --only-binary=:all: --target
export WRANGLER_SEND_METRICS = false

.PHONY: help install dev serve migrate seed token test test-runtime test-host lint scheduled clean bench bench-quick deploy-check deploy rollback

help:
	@echo "make dev                      install, migrate, seed and serve on 127.0.0.1:$(PORT) (ENV=staging|production for their local state)"
	@echo "make test                     install and run every test"
	@echo "make token USER=ann [ROLE=admin] [ENV=..]  print a bearer token for the local server"
	@echo "make migrate [ENV=..]         apply D1 migrations to local state"
	@echo "make scheduled                fire the cron handler once against local D1"
	@echo "make lint                     ruff, migration lint, mypy (src/), SQL owner-scope check (tooling/)"
	@echo "make deploy-check ENV=staging|production   offline: migration lint, migrations on a scratch D1, bundle dry run"
	@echo "make deploy ENV=staging|production [CONFIRM=production]   tests, D1 bookmark, remote migrations, then wrangler deploy"
	@echo "make rollback ENV=.. [BOOKMARK=..] [VERSION=..]   D1 Time Travel restore (if BOOKMARK), then the previous Worker"
	@echo "make bench                    D1 cost per operation vs the seed's designs, Python vs JavaScript, the pictures"
	@echo "                              (a few minutes); rewrites docs/BENCHMARKS.md and docs/img/"
	@echo "make bench-quick              the same at small sizes, printed only (~1 min)"

# --- installation (idempotent; stamps skip work already done) -------------
install: .cache/node.ok .cache/venv.ok .cache/python_modules.ok .cache/python_modules-test.ok .cache/workerd/inputs.sha256

# The Pyodide bundle and the preloaded packages workerd would download (runtime/bundle/build.mjs;
# it skips the work when no input changed).
.cache/workerd/inputs.sha256: .cache/node.ok $(wildcard runtime/bundle/*.mjs)
	$(NODE) runtime/bundle/build.mjs

# The workers SDK vendored as pywrangler lays it out: the package files in python_modules/ beside
# wrangler.toml. wrangler dev, the test Worker and wrangler deploy all ship this one copy.
.cache/python_modules.ok: runtime/requirements-pyodide-runtime.txt
	rm -rf python_modules
	$(PIP_TARGET) python_modules -r runtime/requirements-pyodide-runtime.txt
	@touch $@

.cache/node.ok: package.json package-lock.json
	@$(NODE) -e 'const [a]=process.versions.node.split(".").map(Number); if(a<20){console.error("error: Node.js >= 20 is required (found "+process.versions.node+")");process.exit(1)}'
	npm ci --no-audit --no-fund --loglevel=error
	@mkdir -p .cache && touch $@

.cache/venv.ok: pyproject.toml runtime/pydeps.py
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python >= 3.11 is required)"; exit 1; }
	$(PYTHON) -m venv .venv
	.venv/bin/pip install -q -r <($(PYTHON) runtime/pydeps.py dev)
	@mkdir -p .cache && touch $@

# pytest, Hypothesis and their pure-Python dependencies for the test Worker (Python 3.13 wheels).
.cache/python_modules-test.ok: runtime/requirements-pyodide-test.txt
	rm -rf .cache/python_modules-test
	$(PIP_TARGET) .cache/python_modules-test -r runtime/requirements-pyodide-test.txt
	@mkdir -p .cache && touch $@

# --- local development ----------------------------------------------------
.dev.vars .dev/clerk-dev-private.pem: .dev.vars.example | .cache/node.ok
	$(NODE) runtime/devsetup.mjs

migrate: .cache/node.ok
	$(WRANGLER) d1 migrations apply $(DB) --local $(ENV_FLAG) --persist-to $(STATE) > .cache/migrate.log 2>&1 \
	  || { cat .cache/migrate.log; exit 1; }
	@echo "migrations applied to $(STATE)"

seed: migrate
	$(NODE) runtime/seed.mjs $(ENV_FLAG)
	$(NODE) runtime/seed_photos.mjs $(ENV_FLAG)

# wrangler dev on the real workerd (runtime/cli.mjs dev: the stand-in, --var overrides, the cron each minute).
dev: install .dev.vars seed
	PORT=$(PORT) $(NODE) runtime/cli.mjs dev $(ENV_FLAG)

serve: install
	PORT=$(PORT) $(NODE) runtime/cli.mjs dev $(ENV_FLAG)

token: .cache/node.ok
	@$(NODE) runtime/token.mjs "$(USER)" "$(ROLE)" "$(ENV)"

scheduled: .cache/node.ok
	$(NODE) runtime/cli.mjs scheduled --port $(PORT)

# --- benchmarks (figures, not tests) ---------------------------------------
# SERVER_TIMING=timing makes every response report its D1 calls/rows and its own
# Python time; the scripts run on a fresh scratch D1 (runtime/cli.mjs run).
# Each script rewrites its block of docs/BENCHMARKS.md (--write); ledger_cost and search_growth also
# write bench/results/*.json, from which bench/figures.py draws docs/img/*.svg (standard library).
bench: install
	SERVER_TIMING=timing $(NODE) runtime/cli.mjs run bench/ledger_cost.py --write
	SERVER_TIMING=timing $(NODE) runtime/cli.mjs run bench/charge_rows.py --write
	SERVER_TIMING=timing $(NODE) runtime/cli.mjs run bench/search_growth.py --write
	SERVER_TIMING=timing $(NODE) runtime/cli.mjs run bench/search_cost.py --write
	SERVER_TIMING=timing $(NODE) runtime/cli.mjs run --js-worker bench/pyjs.py --write
	SERVER_TIMING=timing $(NODE) runtime/cli.mjs run bench/py_profile.py --write
	SERVER_TIMING=timing $(NODE) runtime/cli.mjs run bench/api_cost.py --write
	SERVER_TIMING=timing $(NODE) runtime/cli.mjs run bench/chat_archive_cost.py --write
	SERVER_TIMING=timing $(NODE) runtime/cli.mjs run bench/period_cost.py --write
	SERVER_TIMING=timing $(NODE) runtime/cli.mjs run bench/payout_cost.py --write
	SERVER_TIMING=timing $(NODE) runtime/cli.mjs run bench/card_cost.py --write
	$(PYTHON) bench/figures.py

bench-quick: install
	SERVER_TIMING=timing $(NODE) runtime/cli.mjs run bench/api_cost.py --quick
	SERVER_TIMING=timing $(NODE) runtime/cli.mjs run bench/search_cost.py --quick

# --- deploy (docs/DEPLOY.md): migrations first, then the Worker ----------------
deploy-check: install
	$(PYTHON) tooling/deploy.py check --against-tested --env "$(ENV)"

deploy: install
	$(PYTHON) tooling/deploy.py preflight --env "$(ENV)" $(if $(CONFIRM),--confirm $(CONFIRM),)
	$(MAKE) test
	$(PYTHON) tooling/deploy.py release --env "$(ENV)" $(if $(CONFIRM),--confirm $(CONFIRM),)

rollback: install
	$(PYTHON) tooling/deploy.py rollback --env "$(ENV)" $(if $(BOOKMARK),--bookmark $(BOOKMARK),) $(if $(VERSION),--version $(VERSION),)

# --- tests ----------------------------------------------------------------
# The runtime suite runs inside workerd (the test Worker; JSPI lets tests block on D1's promises).
test: install lint test-runtime test-host

test-runtime: install
	$(NODE) runtime/cli.mjs test $(PYTEST_ARGS)

test-host: install
	.venv/bin/pytest -p no:cacheprovider tooling_tests $(PYTEST_ARGS)

lint: .cache/venv.ok
	.venv/bin/ruff check $(wildcard src tests tooling tooling_tests bench runtime/testworker)
	.venv/bin/ruff format --check $(wildcard src tests tooling tooling_tests bench runtime/testworker typings)
	$(PYTHON) tooling/migration_lint.py migrations
	.venv/bin/mypy
	$(PYTHON) tooling/sql_scope_check.py src

clean:
	rm -rf .cache .venv node_modules .wrangler
