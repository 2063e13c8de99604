# msr-cache: the two commands a newcomer needs are `make up STACK=<env>` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTHON ?= python3

.PHONY: help venv lint unit e2e test up preview destroy rotate drift swarm-up swarm-down swarm-status packages images rehearse rehearse-down test-cache bench

help:
	@echo "make up STACK=<env>       pulumi up for stacks/Pulumi.<env>.yaml (checks prerequisites first)"
	@echo "make preview STACK=<env>  pulumi preview for that stack"
	@echo "make destroy STACK=<env>  pulumi destroy for that stack"
	@echo "make rotate STACK=<env>   replace the cache's key and certificate now (pulumi up --replace)"
	@echo "make drift STACK=<env>    fail if the swarm drifted from the state (pulumi refresh --preview-only)"
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
	@# shellcheck/pyflakes off: actionlint uses them only when on PATH, which would make results machine-dependent.
	$(VENV)/bin/actionlint -shellcheck= -pyflakes=

unit: $(STAMP)
	$(PY) -m pytest tests/unit -q

# The local multi-node swarm (scripts/swarm.sh; README "Local swarm"). NODES=n for more nodes.
swarm-up:
	@scripts/swarm.sh up $(NODES) && eval "$$(scripts/swarm.sh env)" && \
	 if [ -n "$${MSRC_SWARM:-}" ]; then tests/images/build.sh; fi

swarm-down:
	@scripts/swarm.sh down

swarm-status:
	@scripts/swarm.sh status

# Runs a command on the local swarm: under its lock, with DOCKER_HOST and MSRC_SWARM
# set and the test images built and served; a swarm this started is stopped after.
ON_SWARM := scripts/swarm.sh with --

# The test images (upstream registry, content-cache stand-in), served to every node.
images:
	@$(ON_SWARM) tests/images/build.sh

# End-to-end tests on the local swarm. Without Docker the tests skip and say why.
# No hypothesis there: its plugin imports hypothesis at the very end, and that
# compile has failed once with CPython 3.11's spurious "AST constructor recursion
# depth mismatch" (cpython#106905) after the threaded fault tests.
e2e: $(STAMP)
	@$(ON_SWARM) bash -c 'if [ -n "$${MSRC_SWARM:-}" ]; then tests/images/build.sh || exit 1; fi; \
	   exec $(PY) -m pytest tests/e2e -q -p no:hypothesispytest'

# The Debian packages the unit and end-to-end tests use (docker.io, docker-registry,
# busybox-static), installed when absent.
packages:
	@scripts/swarm.sh packages

test: lint packages unit e2e

# The policy pack's own virtualenv, which policy/PulumiPolicy.yaml names.
POLICY_STAMP := policy/venv/.installed
$(POLICY_STAMP): policy/requirements.txt
	@test -x policy/venv/bin/python || $(PYTHON) -m venv policy/venv
	policy/venv/bin/pip install --quiet --disable-pip-version-check -r policy/requirements.txt
	@touch $@

# up, preview and rotate run with the policy pack; rotate replaces the key and
# certificate now; drift fails when the swarm differs from the state.
up preview rotate: $(STAMP) $(POLICY_STAMP)
	@scripts/pulumi-stack.sh $@ "$(STACK)"

destroy drift: $(STAMP)
	@scripts/pulumi-stack.sh $@ "$(STACK)"

# A stack rehearsed on the local swarm; see README "Rehearsal".
KEEPING := $(filter 1 yes true,$(KEEP))
rehearse: $(STAMP)
	@if [ -z "$(STACK)$(STACK_CONFIG)" ]; then \
	   echo "rehearse: say which stack: make rehearse STACK=<env> (stacks/Pulumi.<env>.yaml) or STACK_CONFIG=<file>" >&2; \
	   exit 2; fi
	@scripts/swarm.sh with $(if $(KEEPING),--keep) -- bash -c '\
	   if [ -z "$${MSRC_SWARM:-}" ]; then \
	     echo "rehearse: no Docker here: $$(cat build/swarm/unavailable 2>/dev/null)" >&2; exit 1; fi; \
	   tests/images/build.sh && \
	   exec $(PY) -m tests.rehearsal up $(if $(STACK),--stack "$(STACK)") $(if $(STACK_CONFIG),--stack-config "$(STACK_CONFIG)") \
	     $(if $(REPORT),--report "$(REPORT)") $(if $(KEEPING),--keep)'

# Removes a kept rehearsal, and the swarm too when that rehearsal started it.
rehearse-down: $(STAMP)
	@if ! scripts/swarm.sh status >/dev/null; then \
	   if [ -f build/rehearsal/state.json ]; then \
	     echo "rehearse: the local swarm is gone, and the kept rehearsal with it; forgetting it" >&2; \
	     rm -f build/rehearsal/state.json; \
	   else echo "rehearse: no kept rehearsal and no swarm running"; fi; \
	   exit 0; fi
	@$(ON_SWARM) $(PY) -m tests.rehearsal down
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
$(BENCH_STAMP): requirements-bench.txt $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	@touch $@

bench: $(BENCH_STAMP)
	@$(ON_SWARM) bash -c '\
	   if [ -z "$${MSRC_SWARM:-}" ]; then \
	     echo "bench: no Docker here: $$(cat build/swarm/unavailable 2>/dev/null)" >&2; exit 1; fi; \
	   tests/images/build.sh && exec $(PY) -m bench'

