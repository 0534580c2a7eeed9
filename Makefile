# ciel — two commands: `make run` and `make test`. Both bootstrap what they need on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# what `make run` needs; and the test stack (Chromium, nginx, Pure Data, glslang) for `make test`
STAMP_SYS := $(VENV)/.stamp-system
STAMP_SYS_TEST := $(VENV)/.stamp-system-test
STAMP_PY := $(VENV)/.stamp-python
STAMP_PY_TEST := $(VENV)/.stamp-python-test
# acids-rave, which makes the RAVE exports the tests play, in a venv of its own (scripts/setup-rave.sh)
RAVE_VENV := .venv-rave
STAMP_RAVE := $(RAVE_VENV)/.stamp-rave
# pyproject.toml gives compatible ranges; the tested versions are pinned here (torch's CPU build)
PIP_INSTALL := $(PY) -m pip install -q -c constraints.txt
ARGS ?=

.PHONY: run test lint bench models clean setup setup-test

setup: $(STAMP_SYS) $(STAMP_PY)

setup-test: $(STAMP_SYS_TEST) $(STAMP_PY_TEST) $(STAMP_RAVE)

$(STAMP_SYS): scripts/setup-system.sh
	@mkdir -p $(VENV)
	bash scripts/setup-system.sh
	@touch $@

$(STAMP_SYS_TEST): scripts/setup-system.sh $(STAMP_SYS)
	CIEL_WITH_BROWSER=1 bash scripts/setup-system.sh
	@touch $@

$(STAMP_PY): pyproject.toml constraints.txt $(STAMP_SYS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PIP_INSTALL) -e '.[ndi]'
	@touch $@

$(STAMP_PY_TEST): pyproject.toml constraints.txt $(STAMP_PY) $(STAMP_SYS_TEST)
	$(PIP_INSTALL) -e '.[ndi,test,lint]'
	@touch $@

$(STAMP_RAVE): scripts/setup-rave.sh constraints.txt $(STAMP_PY)
	bash scripts/setup-rave.sh $(VENV) $(RAVE_VENV)
	@touch $@

run: setup
	$(VENV)/bin/ciel run $(ARGS)

test: setup-test
	$(PY) -m pytest -q $(ARGS)

# the house's checks: style and mistakes (ruff), types (mypy), layers (import-linter contracts)
lint: setup-test
	$(VENV)/bin/ruff check engine bench tests harness
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: setup-test
	$(PY) -m bench --all $(ARGS)

models: setup
	$(PY) -m engine.train.defaults

clean:
	rm -rf $(VENV) $(RAVE_VENV) .pytest_cache out
