# The two commands of the README. Both create the virtualenv on first use.
#   make run    install deepaas_like, the demo plugin and the framework plugins (uploaded
#               model files), and wheel (deepaas-install-plugin builds plugins that need it),
#               start deepaas-run on 127.0.0.1:5000
#   make test   install everything (all framework extras, test tools, bench plugins), lint and
#               type-check, run every tier of the tests (what CI runs)
#   make check  the developer's loop: lint, then the unit and api tiers without the tests marked slow
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test check lint sample-config bench clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-run: $(BIN)/python setup.py plugins/demo/pyproject.toml plugins/frameworks/pyproject.toml
	$(PIP) install -e . -e plugins/demo -e plugins/frameworks wheel
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-run setup.py tests/bench_plugins/echobench/pyproject.toml tests/bench_plugins/irisbench/pyproject.toml benchmarks/plugins/irisbatch/pyproject.toml benchmarks/plugins/slowbench/pyproject.toml
	$(PIP) install -e '.[all,test]' -e tests/bench_plugins/echobench -e tests/bench_plugins/irisbench -e benchmarks/plugins/irisbatch -e benchmarks/plugins/slowbench
	touch $@

run: $(VENV)/.installed-run
	$(BIN)/deepaas-run $(ARGS)

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

check: lint
	$(BIN)/python -m pytest tests/unit tests/api -m "not slow" $(PYTEST_ARGS)

# ruff: lint and format (settings in ruff.toml); mypy: types (mypy.ini: engine, auth, registry and
# the data plane strictly, the rest of the package clean)
lint: $(VENV)/.installed-test
	$(BIN)/ruff check deepaas_like plugins tests benchmarks
	$(BIN)/ruff format --check deepaas_like plugins tests benchmarks
	$(BIN)/mypy

# Rewrite etc/deepaas_like.conf.sample from the settings table (a test checks they agree).
sample-config: $(VENV)/.installed-run
	$(BIN)/python -c 'from deepaas_like.settings import render_sample_config as r; open("etc/deepaas_like.conf.sample", "w").write(r())'

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/run.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info plugins/demo/*.egg-info .pytest_cache
