# Quick start: `make search` runs the main job, `make test` the whole test suite; both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.effnas-installed

.PHONY: setup browser fashion-mnist search test test-fast lint docs docs-build bench bench-training clean

setup: $(STAMP)

# torch==2.13.0 is the local CPU wheel; any looser spec on a machine without torch pulls a CUDA build of several GB.
# A torch already importable in the venv is kept.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test,bench,docs]'
	touch $(STAMP)

# The dashboard test drives a real headless Chromium (Debian's chromium + chromium-driver).
browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

# Fashion-MNIST's four IDX files from Debian (the training tests use the embedded MNIST digits instead).
fashion-mnist:
	@test -d /usr/share/datasets/fashion-mnist || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null; }

search: setup
	$(PY) -m nas.search --target-flops 400M

lint: setup
	$(VENV)/bin/ruff check .

# The docs site, built as CI builds it: a broken link or a page missing from the navigation fails.
docs-build: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir build/site

docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

# One pytest worker per core: tests train with one thread and spend much of their time waiting on the processes
# they start. A file stays on one worker, so its module fixtures are built once.
PYTEST := $(PY) -m pytest -n logical --dist loadfile

# The 25 slowest tests are listed at the end: CI must stay well under 45 minutes on 2 cores, and they show where.
test: setup browser lint docs-build
	$(PYTEST) --durations=25

# About 12 minutes on 2 cores: no long searches, no browser, no PostgreSQL.
test-fast: setup lint
	$(PYTEST) -m "not slow and not browser and not postgres"

# Every bench whose budget on 2 cores fits BUDGET (`make bench BUDGET=2h`); `python -m bench` lists them all.
BUDGET ?= 15m
bench: setup fashion-mnist
	$(PY) -m bench run --budget $(BUDGET)

bench-training: setup fashion-mnist
	$(PY) -m bench run final_training

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache build
