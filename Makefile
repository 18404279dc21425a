# sdfkit: two commands on a fresh machine — `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
SDF    := $(VENV)/bin/sdf
STAMP  := $(VENV)/.installed
PYTHON ?= python3
export SDF_PROGRESS ?= 1

.PHONY: install demo test lint format bench report clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU build (see DEPS.md); the rest resolves around it
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,ray,evals]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	bash examples/demo.sh

test: install
	SDF_PROGRESS=0 $(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

format: install
	$(VENV)/bin/ruff check --fix src tests bench
	$(VENV)/bin/ruff format src tests bench

# `make bench BENCH=scale_report SCALES=1,3` runs one benchmark (bench/bench_<BENCH>.py) at
# some scales; the full run (every bench, 1×/3×/10×) takes hours on 2 cores.
bench: install
	$(PY) bench/run.py $(if $(BENCH),--only $(BENCH))

report: install
	$(SDF) report

clean:
	rm -rf corpus/documents corpus/*.duckdb* reports/*.html reports/*.json
