# tenantry — the two commands a new user needs are `make run` and `make test`.
# Everything sets itself up: uv (installed with pip when absent), the venv, the locked deps.

SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
RUN := $(UV) run --frozen
HOST ?= 127.0.0.1
PORT ?= 8000
TEST_DATABASE_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/test
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
PYTEST_ARGS ?=
BENCH_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/tenantry_bench
BENCH_REDIS_URL ?= $(TEST_REDIS_URL)
BENCH_MARIADB_URL ?= mariadb+asyncmy://root@127.0.0.1:3306/tenantry_bench
BENCH_ARGS ?=
CLIENT_DIR := clients/typescript
FUZZ_EXAMPLES ?= 10
FUZZ_ARGS ?=
NODE_MISSING := echo "SKIPPED: node/npm are not installed (Node 20+ runs the TypeScript client)"

.PHONY: setup run migrate test test-services test-tenantdb test-tenantdb-sqlite test-tenantdb-services test-mariadb lint format typecheck openapi \
	client client-check client-test fuzz bench bench-mariadb bench-tenantdb bench-events wrk clean

setup: .venv/.synced

.venv/.synced: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv \
		|| $(PYTHON) -m pip install --quiet --user --break-system-packages uv
	$(UV) sync --frozen
	@touch $@

run: setup ## migrate the embedded SQLite database and serve on $(HOST):$(PORT)
	$(RUN) tenantry migrate
	HOST=$(HOST) PORT=$(PORT) $(RUN) tenantry serve --no-migrate

migrate: setup
	$(RUN) tenantry migrate

test: setup ## the whole suite on SQLite with in-process backends (no services)
	TENANTRY_TEST_BACKEND=sqlite $(RUN) pytest $(PYTEST_ARGS)

test-services: setup ## the whole suite against PostgreSQL and Redis, then the tenant suites in database mode
	TENANTRY_TEST_BACKEND=services TEST_DATABASE_URL=$(TEST_DATABASE_URL) \
		TEST_REDIS_URL=$(TEST_REDIS_URL) $(RUN) pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-tenantdb-services

# Database per tenant (TENANCY_MODE=database): the suites whose code path differs between
# the modes — every suite touching tenant-owned tables or the routing (projects, tasks with
# bulk and idempotency, files, exports, the merged audit log, jobs enqueued by tenant
# changes and the outbox, the isolation walker, tests/tenants) — on SQLite, then on
# PostgreSQL + Redis. The rest (accounts, sessions, identities, plans, the HTTP skeleton)
# reads and writes only the control database, identical in both modes, and runs once.
# docs/tenancy.md section 11 ("What CI runs in database mode") gives the reasons.
TENANTDB_SUITES ?= tests/projects tests/tasks tests/files tests/exports tests/orgs/test_isolation.py \
	tests/orgs/test_audit.py tests/orgs/test_jobs_api.py tests/core/jobs/test_jobs.py \
	tests/core/jobs/test_after_rollback.py tests/tenants

test-tenantdb: test-tenantdb-sqlite ## the tenant suites with a database per tenant (SQLite, then PostgreSQL + Redis)
	$(MAKE) --no-print-directory test-tenantdb-services

test-tenantdb-sqlite: setup ## the same suites with a database per tenant on SQLite only (no services)
	TENANTRY_TEST_BACKEND=sqlite TENANTRY_TEST_TENANCY=database $(RUN) pytest $(TENANTDB_SUITES) $(PYTEST_ARGS)

test-tenantdb-services: setup ## the same suites with a database per tenant on PostgreSQL + Redis only
	TENANTRY_TEST_BACKEND=services TENANTRY_TEST_TENANCY=database TEST_DATABASE_URL=$(TEST_DATABASE_URL) \
		TEST_REDIS_URL=$(TEST_REDIS_URL) $(RUN) pytest $(TENANTDB_SUITES) $(PYTEST_ARGS)

TEST_MARIADB_URL ?= mariadb+asyncmy://root@127.0.0.1:3306/mysql

test-mariadb: setup ## the whole suite against MariaDB and Redis (a uniquely named database, dropped afterwards)
	TENANTRY_TEST_BACKEND=mariadb TEST_DATABASE_URL=$(TEST_MARIADB_URL) \
		TEST_REDIS_URL=$(TEST_REDIS_URL) $(RUN) pytest $(PYTEST_ARGS)

lint: setup
	$(RUN) ruff check src tests bench fuzz
	$(RUN) ruff format --check src tests bench fuzz
	$(RUN) mypy

typecheck: setup
	$(RUN) mypy

format: setup
	$(RUN) ruff check --fix src tests bench fuzz
	$(RUN) ruff format src tests bench fuzz

bench: setup wrk ## load test on PostgreSQL + Redis, SQLite, MariaDB + Redis and database per tenant, then the events scenario; reports in bench/results/
	$(RUN) python -m bench.run --database-url $(BENCH_DATABASE_URL) \
		--mariadb-url $(BENCH_MARIADB_URL) --redis-url $(BENCH_REDIS_URL) $(BENCH_ARGS)
	$(MAKE) --no-print-directory bench-events

bench-mariadb: setup wrk ## only the MariaDB + Redis configuration (and the bare references, on PostgreSQL)
	$(RUN) python -m bench.run --configs mariadb --database-url $(BENCH_DATABASE_URL) \
		--mariadb-url $(BENCH_MARIADB_URL) --redis-url $(BENCH_REDIS_URL) $(BENCH_ARGS)

bench-tenantdb: setup wrk ## only database per tenant vs shared mode: 50 tenants on 2 PostgreSQL servers (a throwaway 2nd cluster)
	$(RUN) python -m bench.run --configs tenantdb --database-url $(BENCH_DATABASE_URL) \
		--redis-url $(BENCH_REDIS_URL) $(BENCH_ARGS)

bench-events: setup wrk ## event streams: 200 subscribers, writes at 50/s (PostgreSQL + Redis, ~1 min)
	$(RUN) python -m bench.events --redis-url $(BENCH_REDIS_URL)

wrk: # the load generator of the benchmarks (Debian's package)
	@command -v wrk >/dev/null || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get install -y wrk || { $$SUDO apt-get update && $$SUDO apt-get install -y wrk; }; }

openapi: setup
	$(RUN) tenantry openapi -o openapi.json

client: setup ## regenerate clients/typescript (document + types) from the current app
	@command -v npm >/dev/null || { $(NODE_MISSING); exit 0; }; \
	$(RUN) tenantry openapi -o $(CLIENT_DIR)/openapi.json && \
	cd $(CLIENT_DIR) && npm ci --no-audit --no-fund --loglevel=error && npm run -s generate

client-check: client ## fail when the committed client differs from what the document generates
	@git diff --exit-code HEAD -- $(CLIENT_DIR)/openapi.json $(CLIENT_DIR)/src/schema.ts \
		|| { echo "client-check: clients/typescript is stale: run make client and commit"; exit 1; }

client-test: setup ## type-check the TypeScript client, then its tests against a live tenantry serve + OpenID provider
	@command -v node >/dev/null || { $(NODE_MISSING); exit 0; }; \
	cd $(CLIENT_DIR) && npm ci --no-audit --no-fund --loglevel=error && npm run -s typecheck \
		&& npm run -s build && TENANTRY_BIN=$(CURDIR)/.venv/bin/tenantry npm test

fuzz: setup ## schemathesis against a served app on SQLite, as an organization owner
	$(RUN) python fuzz/run.py --max-examples $(FUZZ_EXAMPLES) $(FUZZ_ARGS)

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
