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

# Mutation testing of the core numerical modules, one module at a time, each mutant run against that
# module's fast tests only (tools/mutation.py; `python tools/mutation.py --list` shows the modules and
# their tests). Report in benchmarks/mutation.md. Slow on 2 shared cores: narrow it with e.g.
#   make mutation MODULES=kinematics
MODULES ?= kinematics attention-mask reader-labels checkpoint pairs metrics features
.PHONY: mutation
mutation: $(STAMP)
	for m in $(MODULES); do OMP_NUM_THREADS=1 nice -n 10 $(VENV)/bin/python tools/mutation.py $$m --max-children 1 || exit 1; done
