# The two set-up commands of the README: `make demo` (a local swarm that trains and commits rounds) and `make test`.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
NODES  ?= 4
ROUNDS ?= 30

.PHONY: install system-deps test test-fast demo bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

system-deps:
	bash scripts/system-deps.sh

test: install system-deps
	$(PY) -m pytest -q -ra

test-fast: install
	$(PY) -m pytest -q -m "not slow"

demo: install
	rm -rf cluster/data cluster/logs
	$(VENV)/bin/swarm cluster up --nodes $(NODES) --dir cluster --rounds $(ROUNDS)

bench: install
	$(PY) -m bench all

clean:
	rm -rf $(VENV) cluster .pytest_cache
