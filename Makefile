# Two commands for a newcomer: `make demo` and `make test`. Both install what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test test-fast mutation bench up down status clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/tally demo

# The whole suite on TEST_WORKERS pytest-xdist workers, each with its own embedded Postgres, Temporal
# servers, emulator and ports; a module's tests stay on one worker, the slowest modules are handed out
# first (tests/conftest.py, SLOW_MODULES_FIRST; docs/testing.md, "In parallel").
# TEST_WORKERS=0 runs it in this one process, as before.
TEST_WORKERS ?= 4
test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

test-fast: install
	$(BIN)/python -m pytest tests/unit tests/emulator

# Mutation testing (docs/testing.md): slow, so not part of `make test`. A clean run each time (mutmut
# keeps a mutant's verdict even after the tests change); prints the score per module.
mutation: install
	rm -rf mutants
	$(BIN)/mutmut run > mutants.log 2>&1 || { tail -c 3000 mutants.log; exit 1; }
	@tail -c 300 mutants.log | tr '\r' '\n' | tail -2
	$(BIN)/python -m tests.mutation.report $(MUTATION_ARGS)

# One target's mutation run, restricted to its modules and their tests (tests/mutation/run.py): push
# (activities/push.py + gateways/stripe/), close (workflows/close.py), ingest, billing. Integration tests
# need DATABASE_URL pointing at a running Postgres: the run migrates one database there, once (a database
# per mutant otherwise takes seconds). MUTANTS="NAMES --refresh-tests" re-runs mutants against new tests.
mutation-%: install
	$(BIN)/python -m tests.mutation.run $* $(MUTANTS)

bench: install
	$(BIN)/python -m benchmarks.close_bench $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.rating_bench
	$(BIN)/python -m benchmarks.api_bench
	$(BIN)/python -m benchmarks.contracts_bench
	$(BIN)/python -m benchmarks.routing_bench

	$(BIN)/python -m benchmarks.meters_bench

	$(BIN)/python -m benchmarks.alerts_bench
	$(BIN)/python -m benchmarks.credits_bench

	$(BIN)/python -m benchmarks.payouts_bench

	$(BIN)/python -m benchmarks.pacing_bench

	$(BIN)/python -m benchmarks.ingest_bench

up: install
	$(BIN)/tally dev up

down: install
	$(BIN)/tally dev down

status: install
	$(BIN)/tally dev status

clean:
	-$(BIN)/tally dev down --purge
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info mutants mutants.log
