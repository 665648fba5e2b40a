# faceit-etl: `make demo` and `make test` set everything up on a machine with Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
export DAGSTER_HOME := $(CURDIR)

TEST_TOOLS := /usr/bin/chromium /usr/bin/docker-compose /usr/bin/caddy
N ?= 1000000
.PHONY: setup demo test ui bench mutate constraints clean

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
	touch $@

setup: $(INSTALLED)

# The whole migration on the bot's own sample file, into an embedded PostgreSQL under .faceit-etl/.
demo: setup
	$(BIN)/faceit-etl migrate samples/bot_nested_subscription_format.json

# From Debian, for the tests: Chromium for the browser test (Playwright's own browser download is
# not used), docker-compose to validate docker-compose.yml (no Docker engine is needed for that) and
# Caddy to run the public profile's proxy configuration (docker/Caddyfile).
$(TEST_TOOLS) &:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium docker-compose caddy >/dev/null

# Two workers (pytest-xdist), each with its own embedded PostgreSQL, handed tests one at a time as they
# finish; the tests of a module that starts servers once (xdist_group) stay on one worker. The 30
# slowest tests are listed at the end, to show where the time goes.
test: setup $(TEST_TOOLS)
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/dg check defs
	$(BIN)/python -m pytest -n 2 --dist loadgroup --durations=30

# The Dagster UI and daemon on http://localhost:3000, on the embedded PostgreSQL unless DATABASE_URL
# is set; "Materialize all" migrates DATA_FILE_PATH (default: the sample file).
ui: setup
	DATA_FILE_PATH=$${DATA_FILE_PATH:-samples/bot_nested_subscription_format.json} \
	  $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $${PORT:-3000}

$(VENV)/.bench-installed: $(INSTALLED)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test,bench]"
	touch $@

# Not part of `make test`: N users against the database's floor, dlt and the old way (bench-results/);
# BENCH_FLAGS=--skip-dlt leaves dlt out.
bench: $(VENV)/.bench-installed
	$(BIN)/python -m faceit_etl.benchmark --users $(N) --out bench-results $(BENCH_FLAGS)

$(VENV)/.mutate-installed: $(INSTALLED)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test,mutate]"
	touch $@

# Not part of `make test`: mutmut over the modules behind the Guarantees table ([tool.mutmut] in
# pyproject.toml), against the `unit` tests; prints the score per module and every mutant not caught.
# MUTATE=db: the modules guarded by `db` tests instead, against a few fast ones, one PostgreSQL for
# all mutants, one at a time (.ci/mutate_db.py); MUTANTS= narrows it, e.g. 'faceit_etl.postgres.verdicts*'.
MUTATE ?= unit
mutate: $(VENV)/.mutate-installed
	rm -rf mutants
ifeq ($(MUTATE),db)
	nice -n 19 $(BIN)/python .ci/mutate_db.py --max-children 1 $(MUTANTS)
else
	nice $(BIN)/mutmut run --max-children 2
endif
	$(BIN)/python .ci/mutation_score.py

constraints: setup
	{ echo "# Every package of a working install, pinned (pip freeze of the set verified together on Python 3.11)."; \
	  echo "# Regenerate with: make constraints"; \
	  $(BIN)/pip freeze --exclude-editable | grep -v '^-e'; } > constraints.txt.new && mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .faceit-etl backups migration.log mutants
