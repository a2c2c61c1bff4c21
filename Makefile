# guardedge: `make demo` and `make test` work on a fresh clone (they create .venv on first use).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: demo test install clean bundle-check image-check

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# A CUDA machine gets PyPI's default torch (on Linux the CUDA build, with ~3 GB of nvidia-* wheels;
	# TORCH_INDEX=https://download.pytorch.org/whl/cu126 picks another CUDA). Elsewhere the CPU build from
	# PyTorch's CPU index; if that index cannot be reached, the default index (a CUDA build on Linux).
	if command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch==$(TORCH); \
	else $(PY) -m pip install -q --retries 1 --timeout 20 --index-url $(TORCH_CPU_INDEX) torch==$(TORCH) \
	  || { echo "make: PyTorch's CPU index did not answer; installing torch from the default index"; \
	       $(PY) -m pip install -q torch==$(TORCH) || $(PY) -m pip install -q "torch>=2.4"; }; fi
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m guardedge.runtime.demo.run

test: $(STAMP)
	$(PY) -m pytest -q

# Slow checks of the air-gapped route (docs/airgap.md), each with its measured duration there.
bundle-check: $(STAMP)
	GUARDEDGE_DEPLOY_CHECKS=1 $(PY) -m pytest -q -s -m slow tests/test_bundle.py

image-check: $(STAMP)
	GUARDEDGE_DEPLOY_CHECKS=1 $(PY) -m pytest -q -s -m slow tests/test_image.py

clean:
	rm -rf $(VENV) build *.egg-info
