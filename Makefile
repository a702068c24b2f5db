# tether — developer commands. `make demo` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= dev,postgres,openai,anthropic,otel,local,server,workers
STAMP := $(VENV)/.installed-$(shell echo '$(EXTRAS)' | tr ',' '-')

.PHONY: setup demo test lint typecheck bench bench-local oracle guardrails clean

setup: $(STAMP)

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

lint: setup
	$(VENV)/bin/ruff check src tests examples bench
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
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache tether.db tether.db-wal tether.db-shm
