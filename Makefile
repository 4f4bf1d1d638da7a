# The two set-up commands of the README: `make demo` (a local swarm that trains and commits rounds) and `make test`.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
NODES  ?= 4
ROUNDS ?= 30

.PHONY: install system-deps test test-containers test-fast demo bench mutation clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

system-deps:
	bash scripts/system-deps.sh

test: install system-deps
	$(PY) -m pytest -q -ra --durations=25

# The container cluster test alone (tests/test_containers.py, also part of make test where podman is installed):
# podman, a Debian base image and the node image, then the README's compose commands. 15 minutes to build on a cold
# machine, about 3 once the images are cached. SWARM_CONTAINER_TESTS=0 make test leaves it out.
test-containers: install
	bash scripts/system-deps.sh
	$(PY) -m pytest -q -ra -m container

test-fast: install
	$(PY) -m pytest -q -m "not slow"

demo: install
	rm -rf cluster/data cluster/logs
	$(VENV)/bin/swarm cluster up --nodes $(NODES) --dir cluster --rounds $(ROUNDS)

bench: install
	$(PY) -m bench all

# Mutation testing of the safety-critical modules (on demand, not in CI; configuration: [tool.mutmut] in
# pyproject.toml, report: TESTING.md). Niced, one worker by default; MUTANTS narrows the run to a glob of mutant
# names (e.g. MUTANTS='crypto.wire.*'). Results accumulate in mutants/ (delete it to start over).
MUTATION_JOBS ?= 1
MUTANTS ?=
mutation: install
	$(PY) -m pip install -q -c constraints.txt -e '.[test,mutation]'
	OMP_NUM_THREADS=1 nice -n 15 $(VENV)/bin/mutmut run --max-children $(MUTATION_JOBS) $(MUTANTS)
	@$(VENV)/bin/mutmut results --all true | awk -F': ' '{n = $$1; gsub(/^ +/, "", n); sub(/\.x(_|ǁ).*/, "", n); \
	  if ($$2 == "not checked" || $$2 == "skipped") {u[n]++; u["overall"]++; next} \
	  t[n]++; t["overall"]++; if ($$2 == "killed" || $$2 == "timeout") {k[n]++; k["overall"]++}} \
	  END {for (n in t) printf "%-32s %5d checked %5d killed %5.1f%% (%d not run)\n", n, t[n], k[n], 100 * k[n] / t[n], u[n]}' | sort
	$(VENV)/bin/mutmut results

clean:
	rm -rf $(VENV) cluster .pytest_cache
