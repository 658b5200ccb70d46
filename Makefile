# Two entry points a new user needs; both create .venv/ on first use.
#   make demo   - generate top vs QCD jets, train MIParT, ParT, ParticleNet and a PFN, print the table
#   make test   - the test suite (what CI runs)
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.jettag-installed

.PHONY: demo test lint setup
setup: $(STAMP)

# torch is pinned to the CPU wheel first so that no dependency can pull a CUDA build of torch.
$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/python -c "import torch" 2>/dev/null || $(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e ".[all]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/jettag demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Mutation testing of the core numerical modules ([tool.mutmut] in pyproject.toml); report in
# benchmarks/mutation.md. Slow (tens of minutes on 2 cores): narrow it with e.g.
#   make mutation MUTANTS='jettag.physics.kinematics*'
MUTANTS ?=
.PHONY: mutation
mutation: $(STAMP)
	rm -rf mutants
	OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children 2 $(MUTANTS)
	$(VENV)/bin/mutmut results
