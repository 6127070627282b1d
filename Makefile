# Switchboard — the two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the test suite drives as real peers (installed when missing and running as root).
APT_PACKAGES := sip-tester baresip-core sox prometheus chromium kamailio
# Debian packages only the benchmarks need.
BENCH_APT_PACKAGES := kamailio sip-tester tcpdump
# Debian packages of the HA lab (make lab, make test-ha, bench/ha): deploy/'s production
# layout in network namespaces — keepalived (VRRP), Patroni with etcd over PostgreSQL 15,
# Prometheus, SIPp as the carrier (docs/operations.md, "The HA lab").
HA_APT_PACKAGES := keepalived patroni python3-etcd etcd-server postgresql-15 prometheus sip-tester curl iproute2

.PHONY: run test test-fast test-pure check lint format deps native system-deps bench-deps esl-node-deps bench clean
.PHONY: ha-deps lab lab-down test-ha

$(BIN)/switchboard: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

deps: $(BIN)/switchboard

# The router's and the RTP engine's hot paths compiled with mypyc (src/switchboard/_native.py): a no-op while the
# build matches the source; a module edited since is run from source until the next build.
native: deps
	@$(BIN)/python -c 'import sys; from switchboard._native import main; sys.exit(main(["build"]))'

# Install missing Debian packages ($(1)) when we are root; otherwise say what is missing.
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "missing Debian packages (run as root or install them):$$missing" >&2; exit 1; fi; \
	fi
endef

system-deps:
	$(call apt_install,$(APT_PACKAGES))

bench-deps:
	$(call apt_install,$(BENCH_APT_PACKAGES))

ha-deps:
	$(call apt_install,$(HA_APT_PACKAGES))

# The HA lab (root): carrier, router-1/2 behind keepalived, media-1..4, db-1/2 under
# Patroni + etcd, monitor (Prometheus), each in its own network namespace on 172.28.0.0/24,
# every service started from deploy/'s files. Stays up until make lab-down; an interrupted
# run tears itself down, and the next run clears leftovers first.
lab: deps ha-deps
	$(BIN)/python -m switchboard.lab up

lab-down: deps
	$(BIN)/python -m switchboard.lab down

# The lab's failure scenarios (router, media node, PostgreSQL failover, partition, rolling
# upgrade) under SIPp load: ~5 minutes, root only (skipped with the reason otherwise).
test-ha: deps
	-@$(MAKE) --no-print-directory ha-deps
	SWITCHBOARD_HA=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/e2e/ha

# npm ESL client (modesl) for the Event Socket compatibility tests, from its package-lock.json.
esl-node-deps:
	@test -d tests/support/esl/node/node_modules/modesl || (cd tests/support/esl/node && npm ci --no-audit --no-fund --silent)

# Python ESL clients (genesis: asyncio, greenswitch: gevent) for the Event Socket compatibility
# tests, in their own venv so their pins never reach the project's dependencies; the tests run
# them as subprocesses (tests/support/esl/*_probe.py). The stamp holds the requirements: a change reinstalls.
ESL_CLIENTS_VENV := .venv-esl-clients
ESL_CLIENTS_REQS := genesis>=2026.10.18,<2028 greenswitch>=0.0.19,<0.1
.PHONY: esl-client-deps
esl-client-deps:
	@stamp=$(ESL_CLIENTS_VENV)/requirements.stamp; want='$(ESL_CLIENTS_REQS)'; \
	if [ -x $(ESL_CLIENTS_VENV)/bin/python ] && [ "$$(cat $$stamp 2>/dev/null)" = "$$want" ]; then exit 0; fi; \
	echo "installing ESL test clients into $(ESL_CLIENTS_VENV): $$want"; \
	rm -f $$stamp; \
	{ test -x $(ESL_CLIENTS_VENV)/bin/python || $(PYTHON) -m venv $(ESL_CLIENTS_VENV); } && \
	$(ESL_CLIENTS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
	  $(foreach r,$(ESL_CLIENTS_REQS),'$(r)') && \
	echo "$$want" > $$stamp

run: native
	$(BIN)/switchboard up --demo

# Every test: unit, integration and end-to-end (tests/conftest.py explains the kinds); the
# 15 slowest are listed at the end.
test: native system-deps esl-node-deps esl-client-deps
	$(BIN)/python -m pytest -q --durations=15
	@$(MAKE) --no-print-directory test-pure

# The modules `make native` compiles, tested once more as the Python source they are.
test-pure: deps
	SWITCHBOARD_NATIVE=0 $(BIN)/python -m pytest -q tests/unit/router tests/unit/sip tests/unit/rtp

# The unit tests only (tests/unit: pure, no sockets, processes or database): under a minute.
test-fast: deps
	$(BIN)/python -m pytest -q --durations=5 tests/unit

lint: deps
	$(BIN)/ruff check src tests bench

check: lint
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

# Every benchmark in bench/ in turn (the executables; _*.py are their helpers), each printing
# its RESULT line last; a failing one is named at the end and makes the target fail.
# One of them: make bench BENCHES=bench/router
BENCHES := $(sort $(filter-out bench/_%,$(wildcard bench/*)))
bench: deps bench-deps
	@echo "benchmarks: $(notdir $(BENCHES))"; failed=""; \
	for b in $(BENCHES); do \
	  echo "== $$b (load average $$(cut -d' ' -f1-3 /proc/loadavg))"; \
	  ./$$b || failed="$$failed $$b"; \
	done; \
	if [ -n "$$failed" ]; then echo "failed:$$failed" >&2; exit 1; fi

format: deps
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

clean:
	rm -rf $(VENV) .venv-esl-clients build src/switchboard/_native_build *.egg-info .pytest_cache .mypy_cache .ruff_cache
