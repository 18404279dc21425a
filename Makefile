# sdfkit: two commands on a fresh machine — `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
SDF    := $(VENV)/bin/sdf
STAMP  := $(VENV)/.installed
PYTHON ?= python3
TEXT_DEDUP := bench/.venv-text-dedup/.installed
export SDF_PROGRESS ?= 1

.PHONY: install demo test lint format bench report clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU build (see DEPS.md); the rest resolves around it
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,ray,evals]'
	# compile the near-duplicate and NER kernels once (numba caches them): ~8 s here, not in a run
	$(PY) -c "from sdfkit.audits.shingles import warm_kernels; warm_kernels()"
	$(PY) -c "from sdfkit.audits.ner_kernels import warm_kernel; warm_kernel()"
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
bench: install $(TEXT_DEDUP)
	$(PY) bench/run.py $(if $(BENCH),--only $(BENCH))

# text-dedup, a baseline of bench_dedup, lives in its own environment: installed into ours it
# would downgrade urllib3 and pull in pyspark. If it cannot be installed, the bench says so.
$(TEXT_DEDUP): bench/requirements-text-dedup.txt
	rm -rf bench/.venv-text-dedup
	$(PYTHON) -m venv bench/.venv-text-dedup
	if bench/.venv-text-dedup/bin/python -m pip install -q -r bench/requirements-text-dedup.txt; \
	then touch $@; else rm -rf bench/.venv-text-dedup; \
	echo "text-dedup could not be installed: bench_dedup runs without it"; fi

report: install
	$(SDF) report

clean:
	rm -rf corpus/documents corpus/*.duckdb* reports/*.html reports/*.json
