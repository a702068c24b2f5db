# tether — developer commands. `make demo` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= dev,postgres,openai,anthropic,otel,local,server,workers
STAMP := $(VENV)/.installed-$(shell echo '$(EXTRAS)' | tr ',' '-')
# the hot path, compiled with mypyc beside its sources (scripts/compile.py; see tether.native)
COMPILED := src/tether/_compiled.json
COMPILED_SOURCES := $(shell $(PYTHON) scripts/compile.py --sources)

.PHONY: setup compile demo test lint typecheck bench bench-local oracle guardrails clean

setup: $(STAMP) $(COMPILED)

compile: $(STAMP)
	$(PY) scripts/compile.py

$(COMPILED): $(STAMP) scripts/compile.py $(COMPILED_SOURCES)
	@echo "compiling tether's hot path with mypyc (a few minutes; TETHER_PURE_PYTHON=1 skips it)"
	$(PY) scripts/compile.py

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing tether and its extras into $(VENV) (the first time builds llama.cpp: several minutes)"
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	@touch $@

demo: setup
	$(PY) -m examples.demo

test: setup
	$(PY) -m pytest -q -p no:cacheprovider
	@echo "the unit tests again, on the pure-Python modules"
	TETHER_PURE_PYTHON=1 $(PY) -m pytest -q -p no:cacheprovider tests/unit

lint: setup
	$(VENV)/bin/ruff check src tests examples bench scripts
	$(VENV)/bin/mypy

typecheck: setup
	$(VENV)/bin/mypy

bench: setup
	$(PY) bench/overhead.py
	$(PY) bench/compounding.py
	$(PY) bench/cost.py

bench-local: setup
	$(PY) bench/local_toolcalls.py

oracle: setup
	$(PY) -m examples.support_desk.oracle

guardrails: setup
	$(PY) -m examples.support_desk.guardrails

clean:
	-$(PYTHON) scripts/compile.py --clean
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache tether.db tether.db-wal tether.db-shm
