# faceit-etl: `make demo` and `make test` set everything up on a machine with Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
export DAGSTER_HOME := $(CURDIR)

CHROMIUM := /usr/bin/chromium
.PHONY: setup demo test ui constraints clean

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
	touch $@

setup: $(INSTALLED)

# The whole migration on the bot's own sample file, into an embedded PostgreSQL under .faceit-etl/.
demo: setup
	$(BIN)/faceit-etl migrate samples/bot_nested_subscription_format.json

# The browser test drives Debian's Chromium (Playwright's own browser download is not used).
$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null

test: setup $(CHROMIUM)
	$(BIN)/python -m pytest

# The Dagster UI and daemon on http://localhost:3000, on the embedded PostgreSQL unless DATABASE_URL
# is set; "Materialize all" migrates DATA_FILE_PATH (default: the sample file).
ui: setup
	DATA_FILE_PATH=$${DATA_FILE_PATH:-samples/bot_nested_subscription_format.json} \
	  $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $${PORT:-3000}

constraints: setup
	{ echo "# Every package of a working install, pinned (pip freeze of the verified set; see BRIEF §4)."; \
	  echo "# Regenerate with: make constraints"; \
	  $(BIN)/pip freeze --exclude-editable | grep -v '^-e'; } > constraints.txt.new && mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .faceit-etl backups migration.log
