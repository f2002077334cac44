# One command to set up and run on the bundled sample, one to set up and test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export KEDRO_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export WANDB_MODE := offline
export NO_MKDOCS_2_WARNING := 1

.PHONY: install run test lint viz app docs docs-serve

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install --upgrade --quiet "pip>=24"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/kedro run

# One pytest worker per core (pytest-xdist); a module's tests stay on one worker, so its
# fixtures are built once. TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= auto
test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope

lint: install
	$(BIN)/ruff check src tests benchmarks

viz: install
	$(BIN)/kedro viz run

# The one-photograph page on http://127.0.0.1:8501 (OUTPUT_DIR: a training run's output folder).
OUTPUT_DIR ?= data/06_models/trained_model
app: install
	$(BIN)/python -m qsight_pipeline.app --output-dir $(OUTPUT_DIR)

# The documentation site (mkdocs.yml): `docs` builds it into site/ in strict mode (a broken link,
# a missing page or a page outside the nav fails), `docs-serve` serves it on http://127.0.0.1:8000.
$(VENV)/.docs-installed: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	touch $@

docs: $(VENV)/.docs-installed
	$(BIN)/mkdocs build --strict

docs-serve: $(VENV)/.docs-installed
	$(BIN)/mkdocs serve
