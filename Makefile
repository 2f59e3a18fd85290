# sendit: the two commands of the README, and a few helpers.
#   make run   - create .venv, install, serve development.ini on http://127.0.0.1:6543
#   make test  - install the test extras and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
# test processes (pytest-xdist): one per core
JOBS ?= auto
PIP = $(BIN)/pip --disable-pip-version-check -q

.PHONY: run test install install-test initdb clean

run: $(VENV)/.installed
	$(BIN)/pserve development.ini

test: $(VENV)/.installed-test
	$(BIN)/pytest -n $(JOBS) $(PYTEST_ARGS)

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit("sendit needs Python 3.11 or newer, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install 'setuptools<82' wheel

# byte-compiled once here: an editable install is otherwise compiled by each
# command that starts (where PYTHONDONTWRITEBYTECODE is set, as in many
# containers, every time: 0.06 s of each command); stale files are ignored
$(VENV)/.installed: $(VENV)/bin/python setup.cfg pyproject.toml
	$(PIP) install -e .
	$(BIN)/python -m compileall -q sendit_core plugins >/dev/null
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -e '.[test]' -e tests/plugin_pkg
	touch $@

initdb: $(VENV)/.installed
	$(BIN)/sendit initdb development.ini

clean:
	rm -rf $(VENV) var .pytest_cache build *.egg-info
