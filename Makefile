# One command runner for people and CI: `make run`, `make test`, `make lint`, `make bench`, `make mutants`,
# `make fuzz`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
RUN_STAMP := $(VENV)/.runtime-stamp
ARGS ?=

.PHONY: run test lint format system-deps clean bench mutants fuzz

# The venv (with a current pip), shared by the two installs below.
$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# `make test`, `make lint`, `make bench`...: the package and the `dev` extra (test clients, linters).
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# `make run`: the package and its runtime dependencies only (a server needs no test tools), unless the
# dev install above, which has them, is newer than pyproject.toml. (To install pipe-relay as a
# command instead: `pip install .` or `pipx install .`.)
$(RUN_STAMP): pyproject.toml | $(PY)
	@if [ ! $(STAMP) -nt pyproject.toml ]; then \
	  echo "$(PY) -m pip install -q -e ."; $(PY) -m pip install -q -e .; \
	fi
	touch $(RUN_STAMP)

# mutmut is opt-in (the `mutants` extra), installed on the first `make mutants` only: CI and `make test`
# never need it.
MUTANTS_STAMP := $(VENV)/.mutants-stamp
$(MUTANTS_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install -q -e '.[dev,mutants]'
	touch $(MUTANTS_STAMP)

# Debian packages the tests drive as real clients: curl, and Chromium for the page tests
# (Playwright drives Debian's /usr/bin/chromium; no browser is downloaded); gcc builds the benchmark's
# C reference relay (loadtests/cref.c), which a test keeps honest; HAProxy and nginx run deploy/'s
# configs in front of pipe-relay hosts in tests/deploy and loadtests/proxy_bench.py; Debian's prometheus
# package (promtool and prometheus) checks and runs deploy/'s monitoring in tests/deploy/test_monitoring.py.
system-deps:
	@missing=""; \
	command -v curl >/dev/null 2>&1 || missing="$$missing curl"; \
	command -v cc >/dev/null 2>&1 || missing="$$missing gcc"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	PATH="$$PATH:/usr/sbin"; command -v haproxy >/dev/null 2>&1 || missing="$$missing haproxy"; \
	command -v nginx >/dev/null 2>&1 || missing="$$missing nginx"; \
	{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

run: $(RUN_STAMP)
	$(VENV)/bin/pipe-relay $(ARGS)

test: $(STAMP) system-deps
	$(PY) -m pytest -q $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check pipe_relay tests loadtests
	$(VENV)/bin/ruff check pipe_relay tests loadtests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# pipe-relay against the Node piping-server (installed on demand with npm); see docs/performance.md.
bench: $(STAMP) system-deps
	$(PY) loadtests/bench.py $(ARGS)

# Mutation testing of the sans-IO core (opt-in: not part of `make test` or CI). mutmut mutates
# pipe_relay/core and pipe_relay/errors.py and runs tests/core against each mutant on one worker
# (see [tool.mutmut] in pyproject.toml), then prints a score per module and every mutant not killed.
# A fresh run each time (cached verdicts survive new tests); `make mutants ARGS='pipe_relay.core.paths*'`
# re-tests only the mutants named, keeping the rest of mutants/.
mutants: $(MUTANTS_STAMP)
	@if [ -z "$(ARGS)" ]; then rm -rf mutants; fi
	$(VENV)/bin/mutmut run --max-children 1 $(ARGS)
	@echo
	@$(VENV)/bin/mutmut results --all true | awk '{ m = $$1; sub(/\.x(_|ǁ).*$$/, "", m); s = $$2 ($$3 ? " " $$3 : ""); \
	  n[m]++; c[m, s]++; n["all"]++; c["all", s]++ } \
	  END { printf "%-26s %6s %7s %8s %9s %9s\n", "module", "total", "killed", "timeout", "survived", "no tests"; \
	  for (m in n) if (m != "all") printf "%-26s %6d %7d %8d %9d %9d\n", m, n[m], c[m, "killed"], c[m, "timeout"], \
	  c[m, "survived"], c[m, "no tests"] | "sort"; close("sort"); \
	  printf "%-26s %6d %7d %8d %9d %9d\n", "all", n["all"], c["all", "killed"], c["all", "timeout"], \
	  c["all", "survived"], c["all", "no tests"] }'
	@echo; echo "Not killed (see one with: $(VENV)/bin/mutmut show NAME):"
	@$(VENV)/bin/mutmut results

# Coverage-guided fuzzing of the core parsers with atheris (installed on demand, not a dev extra);
# bounded: `make fuzz ARGS="--seconds 300"` (default 60). See loadtests/README.md.
fuzz: $(STAMP)
	$(PY) -c 'import atheris' 2>/dev/null || $(PY) -m pip install -q atheris
	$(PY) -m loadtests.fuzz $(ARGS)

format: $(STAMP)
	$(VENV)/bin/ruff format pipe_relay tests loadtests
	$(VENV)/bin/ruff check --fix pipe_relay tests loadtests

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache mutants
