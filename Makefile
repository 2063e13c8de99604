# msr-cache: the two commands a newcomer needs are `make up STACK=<env>` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTHON ?= python3

.PHONY: help venv policy-venv lock lint unit e2e test up preview destroy rotate drift check engine-check swarm-up swarm-down swarm-status packages images rehearse rehearse-down test-cache bench

help:
	@echo "make up STACK=<env>       pulumi up for stacks/Pulumi.<env>.yaml (checks prerequisites first)"
	@echo "make preview STACK=<env>  pulumi preview for that stack"
	@echo "make destroy STACK=<env>  pulumi destroy for that stack"
	@echo "make rotate STACK=<env> [CACHE=<name>]  replace a cache's key and certificate now (pulumi up --replace)"
	@echo "make drift STACK=<env>    fail if the swarm drifted from the state (pulumi refresh --preview-only)"
	@echo "make check STACK=<env>    fail if any cache's certificate expires within 30 days (CHECK_DAYS=)"
	@echo "make test                 lint, unit tests, and end-to-end tests on a local multi-node Docker Swarm"
	@echo "make swarm-up             start the local swarm (NODES=3) and leave it up for faster re-runs"
	@echo "make swarm-down           remove the local swarm: daemons, namespaces, bridge, rule, data"
	@echo "make rehearse STACK=<env> apply a stack to a throwaway local swarm and pull through it"
	@echo "                          (STACK_CONFIG=<file> instead of STACK, REPORT=<file>, KEEP=1)"
	@echo "make rehearse-down        remove a rehearsal kept with KEEP=1"
	@echo "make bench                pulls over a simulated WAN, deploy/rotation timings, program cost"
	@echo "                          (BENCH_RUNS=3 BENCH_SIZE_MB=100 BENCH_RTT_MS=50 BENCH_MBIT=100 BENCH_JSON=<file>)"
	@echo "make test-cache ENV=<env> deploy a throwaway copy of an env's cache, smoke-check it, destroy it"
	@echo "                          (PULL=repo:tag, PORT=N, ADDRESS=host:port, CA_FILE=<pem>, KEEP=1)"
	@echo "make engine-check         the real engine on the local swarm: dev stack up, preview with no"
	@echo "                          changes, destroy, nothing left (needs Internet for the CLI and plugins)"
	@echo "make lock                 recompile requirements*.lock from the requirements*.txt ranges (UPGRADE=1)"

# Dependencies: the requirements*.txt files hold the ranges we accept; the
# requirements*.lock files, compiled from them by `make lock`, pin every package
# (and what it pulls in) to one version and its hashes, and are all that make and
# CI install (README "Dependencies"). The provider SDKs pinned there also pin the
# provider plugins the CLI uses.
PIP_LOCKED := -m pip install --quiet --disable-pip-version-check --require-hashes -r

# The virtualenv Pulumi.yaml names; brought in line with the lock whenever it changes.
$(STAMP): requirements-dev.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) $(PIP_LOCKED) requirements-dev.lock
	@touch $@

venv: $(STAMP)

# Recompiles the locks: the dev lock first, the others constrained to it, so one
# package has one version everywhere. Versions already locked are kept unless
# UPGRADE=1. Needs PyPI.
UV_COMPILE = $(VENV)/bin/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command "make lock" $(if $(filter 1 yes true,$(UPGRADE)),--upgrade)
lock: $(STAMP)
	$(UV_COMPILE) requirements-dev.txt -o requirements-dev.lock
	$(UV_COMPILE) requirements.txt -c requirements-dev.lock -o requirements.lock
	$(UV_COMPILE) requirements-bench.txt -c requirements-dev.lock -o requirements-bench.lock
	$(UV_COMPILE) policy/requirements.txt -c requirements-dev.lock -o policy/requirements.lock

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .
	@# shellcheck/pyflakes off: actionlint uses them only when on PATH, which would make results machine-dependent.
	$(VENV)/bin/actionlint -shellcheck= -pyflakes=

unit: $(STAMP)
	$(PY) -m pytest tests/unit -q

# The local multi-node swarm (scripts/swarm.sh; README "Local swarm"). NODES=n for more nodes.
swarm-up:
	@scripts/swarm.sh up $(NODES) && eval "$$(scripts/swarm.sh env)" && \
	 if [ -n "$${MSRC_SWARM:-}" ]; then rehearsal/images/build.sh; fi

swarm-down:
	@scripts/swarm.sh down

swarm-status:
	@scripts/swarm.sh status

# Runs a command on the local swarm: under its lock, with DOCKER_HOST and MSRC_SWARM
# set and the test images built and served; a swarm this started is stopped after.
ON_SWARM := scripts/swarm.sh with --

# The test images (upstream registry, content-cache stand-in), served to every node.
images:
	@$(ON_SWARM) rehearsal/images/build.sh

# End-to-end tests on the local swarm. Without Docker the tests skip and say why.
# No hypothesis there: its plugin imports hypothesis at the very end, and that
# compile has failed once with CPython 3.11's spurious "AST constructor recursion
# depth mismatch" (cpython#106905) after the threaded fault tests.
e2e: $(STAMP)
	@$(ON_SWARM) bash -c 'if [ -n "$${MSRC_SWARM:-}" ]; then rehearsal/images/build.sh || exit 1; fi; \
	   exec $(PY) -m pytest tests/e2e -q -p no:hypothesispytest'

# The Debian packages the unit and end-to-end tests use (docker.io, docker-registry,
# busybox-static), installed when absent.
packages:
	@scripts/swarm.sh packages

test: lint packages unit e2e

# The policy pack's own virtualenv, which policy/PulumiPolicy.yaml names: the
# pack's lock, then the project itself (editable, without its dependencies, which
# the lock already holds, and without build isolation, so nothing unpinned is
# fetched), so the pack imports the program's own rules (components/rules.py).
POLICY_STAMP := policy/venv/.installed
$(POLICY_STAMP): policy/requirements.lock pyproject.toml
	@test -x policy/venv/bin/python || $(PYTHON) -m venv policy/venv
	policy/venv/bin/python $(PIP_LOCKED) policy/requirements.lock
	policy/venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-index \
	  --no-build-isolation --editable .
	@touch $@

policy-venv: $(POLICY_STAMP)

# up, preview and rotate run with the policy pack; rotate replaces the key and
# certificate now; drift fails when the swarm differs from the state; check (and
# drift) fail when the certificate expires within 30 days.
# First the set-up and checks that take seconds (stack file, Pulumi CLI, backend,
# swarm: scripts/pulumi-stack.sh prepare), then the virtualenvs (the policy pack's
# takes about 30 s the first time), then pulumi. The order is in the recipe, not
# in the prerequisites, so that it holds under make -j too.
up preview rotate:
	@scripts/pulumi-stack.sh prepare $@ "$(STACK)"
	@$(MAKE) --no-print-directory $(STAMP) $(POLICY_STAMP)
	@scripts/pulumi-stack.sh $@ "$(STACK)"

destroy drift check:
	@scripts/pulumi-stack.sh prepare $@ "$(STACK)"
	@$(MAKE) --no-print-directory $(STAMP)
	@scripts/pulumi-stack.sh $@ "$(STACK)"

# The real engine (pulumi up, preview --expect-no-changes, destroy, nothing left)
# for the dev stack on the local swarm, with the stand-in images: what the
# `engine` GitHub workflow runs. Needs the Pulumi CLI and its plugins, so Internet.
engine-check: $(STAMP) $(POLICY_STAMP)
	@scripts/engine-check.sh

# A stack rehearsed on the local swarm; see README "Rehearsal".
KEEPING := $(filter 1 yes true,$(KEEP))
rehearse: $(STAMP)
	@if [ -z "$(STACK)$(STACK_CONFIG)" ]; then \
	   echo "rehearse: say which stack: make rehearse STACK=<env> (stacks/Pulumi.<env>.yaml) or STACK_CONFIG=<file>" >&2; \
	   exit 2; fi
	@$(PY) -m rehearsal check --for-up $(if $(STACK),--stack "$(STACK)") $(if $(STACK_CONFIG),--stack-config "$(STACK_CONFIG)")
	@scripts/swarm.sh with $(if $(KEEPING),--keep) -- bash -c '\
	   if [ -z "$${MSRC_SWARM:-}" ]; then \
	     echo "rehearse: no Docker here: $$(cat build/swarm/unavailable 2>/dev/null)" >&2; exit 1; fi; \
	   rehearsal/images/build.sh && \
	   exec $(PY) -m rehearsal up $(if $(STACK),--stack "$(STACK)") $(if $(STACK_CONFIG),--stack-config "$(STACK_CONFIG)") \
	     $(if $(REPORT),--report "$(REPORT)") $(if $(KEEPING),--keep)'

# Removes a kept rehearsal, and the swarm too when that rehearsal started it.
rehearse-down: $(STAMP)
	@if ! scripts/swarm.sh status >/dev/null; then \
	   if [ -f build/rehearsal/state.json ]; then \
	     echo "rehearse: the local swarm is gone, and the kept rehearsal with it; forgetting it" >&2; \
	     rm -rf build/rehearsal; \
	   else echo "rehearse: no kept rehearsal and no swarm running"; fi; \
	   exit 0; fi
	@$(ON_SWARM) $(PY) -m rehearsal down
	@scripts/swarm.sh release

# A throwaway copy of an environment's cache: up, smoke check, destroy (README runbook).
TEST_CACHE_KEEP := $(filter 1 yes true,$(KEEP))
test-cache: $(STAMP) $(POLICY_STAMP)
	@if [ -z "$(ENV)" ]; then \
	   echo "test-cache: say which environment: make test-cache ENV=<env>, one of: $$(ls stacks | sed -n 's/^Pulumi\.\(.*\)\.yaml$$/\1/p' | grep -v '^test-' | xargs)" >&2; \
	   exit 2; fi
	@$(PY) -m tools.test_cache "$(ENV)" $(if $(PULL),--pull "$(PULL)") $(if $(PORT),--port "$(PORT)") \
	   $(if $(ADDRESS),--address "$(ADDRESS)") $(if $(CA_FILE),--ca-file "$(CA_FILE)") \
	   $(if $(TEST_CACHE_KEEP),--keep-on-failure)

# The benchmark (README "Benchmark"): its plot needs matplotlib, kept out of make test.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): requirements-bench.lock $(STAMP)
	$(PY) $(PIP_LOCKED) requirements-bench.lock
	@touch $@

bench: $(BENCH_STAMP)
	@$(ON_SWARM) bash -c '\
	   if [ -z "$${MSRC_SWARM:-}" ]; then \
	     echo "bench: no Docker here: $$(cat build/swarm/unavailable 2>/dev/null)" >&2; exit 1; fi; \
	   rehearsal/images/build.sh && exec $(PY) -m bench'

