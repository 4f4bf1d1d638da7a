# The two set-up commands of the README: `make demo` (a local swarm that trains and commits rounds) and `make test`.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
NODES  ?= 4
ROUNDS ?= 30

.PHONY: install system-deps test test-fast demo bench mutation clean

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

# Mutation testing of the safety-critical modules (on demand, not in CI; configuration: [tool.mutmut] in
# pyproject.toml, report: TESTING.md). Niced, one worker by default; MUTANTS narrows the run to a glob of mutant
# names (e.g. MUTANTS='crypto.wire.*'). Results accumulate in mutants/ (delete it to start over).
MUTATION_JOBS ?= 1
MUTANTS ?=
mutation: install
	$(PY) -m pip install -q -c constraints.txt -e '.[test,mutation]'
	OMP_NUM_THREADS=1 nice -n 15 $(VENV)/bin/mutmut run --max-children $(MUTATION_JOBS) $(MUTANTS)
	@$(VENV)/bin/mutmut results --all true | awk -F': ' '{n=$$1; gsub(/^ +/, "", n); sub(/\.x(_|ǁ).*/, "", n); \
	  t[n]++; if ($$2 == "killed" || $$2 == "timeout") k[n]++;} \
	  END {for (n in t) {printf "%-32s %4d mutants %4d killed %5.1f%%\n", n, t[n], k[n], 100 * k[n] / t[n]; T += t[n]; K += k[n]} \
	  printf "%-32s %4d mutants %4d killed %5.1f%%\n", "overall", T, K, 100 * K / T}' | sort
	$(VENV)/bin/mutmut results

clean:
	rm -rf $(VENV) cluster .pytest_cache
