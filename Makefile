# msr-cache: the two commands a newcomer needs are `make up STACK=<env>` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTHON ?= python3

.PHONY: help venv lint unit e2e test up preview destroy swarm-up swarm-down

help:
	@echo "make up STACK=<env>       pulumi up for stacks/Pulumi.<env>.yaml (checks prerequisites first)"
	@echo "make preview STACK=<env>  pulumi preview for that stack"
	@echo "make destroy STACK=<env>  pulumi destroy for that stack"
	@echo "make test                 lint, unit tests, and end-to-end tests on a local Docker Swarm"

# The virtualenv Pulumi.yaml names; rebuilt when the requirements change.
$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

unit: $(STAMP)
	$(PY) -m pytest tests/unit -q

swarm-up:
	scripts/swarm.sh up

swarm-down:
	scripts/swarm.sh down

# End-to-end tests need the swarm; it is stopped again even when they fail.
e2e: $(STAMP)
	@scripts/swarm.sh up; \
	 eval "$$(scripts/swarm.sh env)"; \
	 $(PY) -m pytest tests/e2e -q; status=$$?; \
	 scripts/swarm.sh down; \
	 exit $$status

test: lint unit e2e

up preview destroy: $(STAMP)
	@scripts/pulumi-stack.sh $@ "$(STACK)"
