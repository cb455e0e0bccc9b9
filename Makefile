# The two commands: `make run` starts the app at http://127.0.0.1:7860, `make test` runs the whole suite.
# Both create .venv/ and install everything on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint system-deps bench clean

# requirements*.txt are the pins (runtime, the optional extras, dev); pyproject.toml gives the ranges.
$(STAMP): requirements.txt requirements-extras.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-extras.txt -r requirements-dev.txt
	touch $(STAMP)

system-deps:
	bash scripts/install-system-deps.sh

run: $(STAMP)
	$(PY) app.py $(ARGS)

test: system-deps $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(PYTEST_ARGS)

# Everything but the browser tests.
test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not e2e" $(PYTEST_ARGS)

# Lint (package and tests), format check and type check of the package, layer contracts (all in pyproject.toml).
# The tests are not under `ruff format --check` yet.
lint: $(STAMP)
	$(VENV)/bin/ruff check clipapp tests
	$(VENV)/bin/ruff format --check clipapp tests
	$(VENV)/bin/mypy clipapp
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) bench/bench_encode.py
	$(PY) bench/bench_search.py --sizes 10000 100000

clean:
	rm -rf $(VENV) .pytest_cache
