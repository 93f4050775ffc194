# One command runner for people and CI: `make run`, `make test`, `make lint`, `make bench`, `make fuzz`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
ARGS ?=

.PHONY: run test lint format system-deps clean bench fuzz

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Debian packages the tests drive as real clients: curl, and Chromium for the page tests
# (Playwright drives Debian's /usr/bin/chromium; no browser is downloaded).
system-deps:
	@missing=""; \
	command -v curl >/dev/null 2>&1 || missing="$$missing curl"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

run: $(STAMP)
	$(VENV)/bin/pipe-relay $(ARGS)

test: $(STAMP) system-deps
	$(PY) -m pytest -q $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check pipe_relay tests loadtests
	$(VENV)/bin/ruff check pipe_relay tests loadtests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# pipe-relay against the Node piping-server (installed on demand with npm); see README, Performance.
bench: $(STAMP) system-deps
	$(PY) loadtests/bench.py $(ARGS)

# Coverage-guided fuzzing of the core parsers with atheris (installed on demand, not a dev extra);
# bounded: `make fuzz ARGS="--seconds 300"` (default 60). See loadtests/README.md.
fuzz: $(STAMP)
	$(PY) -c 'import atheris' 2>/dev/null || $(PY) -m pip install -q atheris
	$(PY) -m loadtests.fuzz $(ARGS)

format: $(STAMP)
	$(VENV)/bin/ruff format pipe_relay tests loadtests
	$(VENV)/bin/ruff check --fix pipe_relay tests loadtests

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
