# guardedge: `make demo` and `make test` work on a fresh clone (they create .venv on first use).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# A CUDA machine gets pip's default torch; elsewhere the CPU build (no GBs of CUDA wheels).
	if command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q "torch>=2.4"; \
	else $(PY) -m pip install -q torch==2.13.0 || $(PY) -m pip install -q "torch>=2.4"; fi
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m guardedge.runtime.demo.run

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
