# The two commands a newcomer needs: `make up` and `make test`.
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: up down status logs test lint protos bootstrap

bootstrap:
	@scripts/bootstrap.sh

## Start the whole mesh on 127.0.0.1 (installs what is missing first).
up: bootstrap
	@$(PY) -m cloudshelf.cli local up

## Stop everything `make up` started.
down:
	@if [ -x $(PY) ]; then $(PY) -m cloudshelf.cli local down; fi

## One line per service: name, address, health.
status: bootstrap
	@$(PY) -m cloudshelf.cli local status

logs:
	@tail -n 50 -F .state/logs/*.log

## The whole suite against real PostgreSQL, Redis and the AWS emulator on free ports.
## pytest exits 5 when it collected no test: that fails too, like any non-zero code.
test: bootstrap lint
	@$(PY) -m pytest $(PYTEST_ARGS)

## Static checks: ruff (lint and format), mypy, buf lint.
lint: bootstrap
	@.venv/bin/ruff check -q .
	@.venv/bin/ruff format -q --check .
	@.venv/bin/mypy
	@cd protos && ../.venv/bin/buf lint

## Regenerate the Python stubs (and .pyi) from protos/.
protos: bootstrap
	@$(PY) -m cloudshelf.codegen
