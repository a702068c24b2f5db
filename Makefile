# tether — developer commands. `make demo` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= dev,postgres,openai,anthropic,otel,local,server,workers

# llama.cpp is compiled here, for any CPU of the architecture rather than for the one building it
# (a build for the building CPU may use instructions, e.g. AMX, that other machines or VMs do not
# allow, and crash there). LLAMA_CMAKE_ARGS overrides the flags.
LLAMA_VERSION := $(shell sed -n 's/^llama-cpp-python==//p' constraints.txt)
ARCH := $(shell uname -m)
ifneq ($(origin LLAMA_CMAKE_ARGS),undefined)
LLAMA_FLAVOUR := custom
else ifeq ($(ARCH),x86_64)
LLAMA_FLAVOUR := portable
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
else
LLAMA_FLAVOUR := portable
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF
endif
WHEELS := $(VENV)/wheels/$(LLAMA_FLAVOUR)
STAMP := $(VENV)/.installed-$(shell echo '$(EXTRAS)' | tr ',' '-')-$(LLAMA_FLAVOUR)

.PHONY: setup demo test lint typecheck bench bench-local oracle guardrails clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@case ',$(EXTRAS),' in *,local,*) $(MAKE) --no-print-directory llama-wheel ;; esac
	@echo "installing tether and its extras into $(VENV)"
	$(PY) -m pip install --quiet --find-links $(WHEELS) -c constraints.txt -e '.[$(EXTRAS)]'
	@rm -f $(VENV)/.installed-*  # one stamp: another flavour or set of extras installs again
	@touch $@

# The llama-cpp-python wheel, compiled once per flavour; --no-cache-dir because pip's wheel cache
# is keyed on the source release, not on the compile flags.
.PHONY: llama-wheel
llama-wheel:
	@if ls $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1; then \
		echo "llama-cpp-python $(LLAMA_VERSION) ($(LLAMA_FLAVOUR)) already built in $(WHEELS)"; \
	else \
		echo "building llama-cpp-python $(LLAMA_VERSION) ($(LLAMA_FLAVOUR): $(LLAMA_CMAKE_ARGS))"; \
		echo "this compiles llama.cpp: several minutes; log in $(WHEELS)/build.log"; \
		mkdir -p $(WHEELS) && \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip wheel --no-cache-dir --no-deps -v \
			--wheel-dir $(WHEELS) llama-cpp-python==$(LLAMA_VERSION) > $(WHEELS)/build.log 2>&1 \
			|| { tail -40 $(WHEELS)/build.log; exit 1; }; \
	fi
	$(PY) -m pip install --quiet --force-reinstall --no-deps $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl

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
