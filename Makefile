# The two entry points: `make demo` and `make test`. Each creates .venv and installs on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# torch is pinned here, not in pyproject: 2.13.0 is the local CPU wheel, a newer one pulls GBs of CUDA.
TORCH  := torch==2.13.0

.PHONY: install demo test lint docs bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev,server]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mssd demo

lint: $(STAMP)
	$(BIN)/ruff check .

# The documentation site (mkdocs.yml, docs/): --strict fails on a broken link or anchor and on a page
# missing from the nav. `$(BIN)/mkdocs serve` previews it on 127.0.0.1:8000.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# Two pytest-xdist workers, each pinned to its share of the CPUs; tests/conftest.py says which tests
# share a worker (the integration topology; the tests on the session's local Ray) and why.
test: $(STAMP) lint docs test-deps
	$(BIN)/python -m pytest -q -n 2 --dist loadscope --no-loadscope-reorder

clean:
	rm -rf $(VENV) runs site .pytest_cache .ruff_cache

# ---- Test dependencies from Debian (issue 6: tests/integration; issue 14: the MLflow UI browser test) ---
# tests/integration builds the team topology from real processes and needs PostgreSQL's server binaries
# (Debian's `postgresql`). Installed here when missing and we are root with apt-get (as CI is); anywhere
# else the tests skip and say why. The Python side (psycopg2, mlflow[auth]) is the `server` extra above.
.PHONY: test-deps test-integration

test-deps:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then \
		true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "test-deps: installing postgresql for tests/integration"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q postgresql >/dev/null 2>&1 \
		|| { apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null; }; \
	else \
		echo "test-deps: no PostgreSQL binaries and not root with apt-get: tests/integration will skip"; \
	fi
	@# tests/study/test_mlflow_ui_browser.py drives headless Chromium (Debian's `chromium`) against `mssd ui`.
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
		true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "test-deps: installing chromium for the MLflow UI browser test"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q chromium >/dev/null 2>&1 \
		|| { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; \
	else \
		echo "test-deps: no chromium and not root with apt-get: the MLflow UI browser test will skip"; \
	fi

test-integration: $(STAMP) test-deps
	$(BIN)/python -m pytest -q -m integration tests/integration

# ---- GPU check (benchmarks/gpu_check.py; benchmarks/README.md "GPU check") --------------------------
# On a machine with CUDA and only torch + numpy (no .venv, no install): plain `python3`. The table and JSON
# go to $(GPU_CHECK_OUT); `make gpu-check GPU_CHECK_ARGS=--smoke` runs every part at toy sizes on the CPU.
.PHONY: gpu-check
GPU_CHECK_OUT ?= runs/gpu-check
gpu-check:
	$(PYTHON) benchmarks/gpu_check.py --out $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS)
