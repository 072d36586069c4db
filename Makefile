# Two entry points for a fresh machine (see README "Quick start"): `make train` and `make test`.
# Both create .venv and install vitlab into it first; nothing needs to be installed beforehand but Python and pip.
PYTHON ?= python3
VENV := .venv
# torch is pinned here only for the install step: this version has a CPU wheel on the project's machines.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: train demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet "$(TORCH_SPEC)"
	$(VENV)/bin/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

train: $(STAMP)
	$(VENV)/bin/vitlab train

demo: $(STAMP)
	$(VENV)/bin/vitlab demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/vitlab bench

clean:
	rm -rf $(VENV) build src/*.egg-info
