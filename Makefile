# Two entry points: `make demo` (end-to-end run on SynthAVS) and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
# CPU build from the local wheel cache here; GPU users: see README ("Installing on a GPU machine").
TORCH ?= torch==2.13.0

.PHONY: install demo test test-fast lint dryrun clean minicpmo-env

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# MiniCPM-o-2.6's code needs transformers 4.44.2: its own environment, for captions.python
# (snakemake --use-conda gives its rules envs/minicpmo.yaml instead).
MINICPMO_VENV := .venv-minicpmo

$(MINICPMO_VENV)/.installed: envs/minicpmo-requirements.txt
	$(PYTHON) -m venv $(MINICPMO_VENV)
	$(MINICPMO_VENV)/bin/pip install --quiet --upgrade pip
	$(MINICPMO_VENV)/bin/pip install --quiet -r envs/minicpmo-requirements.txt
	touch $@

minicpmo-env: $(MINICPMO_VENV)/.installed

demo: install
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --report results/synthavs/report.zip
	@echo; cat results/synthavs/report/summary.md
	@echo; echo "## Metrics (SynthAVS, S4 setting)"; echo; cat results/synthavs/report/table2.md
	@echo; echo "Snakemake report: results/synthavs/report.zip (unzip, open report/report.html)"
	@echo "Results page (every test video with its sound, masks and captions): results/synthavs/page/index.html"

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# the unit tests alone, for quick work (no Snakemake or SLURM runs); CI runs `make lint test`
test-fast: install
	$(BIN)/python -m pytest -m "not workflow and not slurm" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check Snakefile workflow/
	$(BIN)/snakemake --lint

dryrun: install
	$(BIN)/snakemake -n

clean:
	rm -rf results .snakemake
