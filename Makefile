# ciel — two commands: `make run` and `make test`. Both bootstrap what they need on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP_SYS := $(VENV)/.stamp-system
STAMP_PY := $(VENV)/.stamp-python
ARGS ?=

.PHONY: run test lint bench models clean setup

setup: $(STAMP_SYS) $(STAMP_PY)

$(STAMP_SYS): scripts/setup-system.sh
	@mkdir -p $(VENV)
	CIEL_WITH_BROWSER=1 bash scripts/setup-system.sh
	@touch $@

$(STAMP_PY): pyproject.toml $(STAMP_SYS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,lint]'
	@touch $@

run: setup
	$(VENV)/bin/ciel run $(ARGS)

test: setup
	$(PY) -m pytest -q $(ARGS)

# the house's checks: style and mistakes (ruff), types (mypy), layers (import-linter contracts)
lint: setup
	$(VENV)/bin/ruff check engine bench tests harness
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: setup
	$(PY) -m bench --all $(ARGS)

models: setup
	$(PY) -m engine.train.defaults

clean:
	rm -rf $(VENV) .pytest_cache out
