#!/usr/bin/env bash
# `make test`: every test, in three chains side by side, so the 2 cores stay busy to the end:
#   1. the demo's outcome tests (one `posttrain demo` run and the RL runs from its checkpoints) and the FSDP2
#      tests (torchrun launches): ~half of the suite's time on 2 cores;
#   2. the vLLM tier (scripts/test-vllm.sh: builds .venv-vllm with vLLM's CPU build once, then tests/vllm_tier);
#   3. the rest, in the foreground.
# Runs pick their thread count from the load they see (posttrain/cpu.py), so the chains share the cores instead
# of oversubscribing them. The tiny model is built first: every chain reads it from the cache.
# Exit status: non-zero when any chain fails; every chain's log is printed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
ALONGSIDE=(tests/test_demo_outcomes.py tests/recipes/test_fsdp.py)
outcomes_log="$(mktemp)"
vllm_log="$(mktemp)"
trap 'rm -f "$outcomes_log" "$vllm_log"' EXIT
start=$(date +%s)

"$PY" -c 'from posttrain.models.load import resolve_model_dir; resolve_model_dir("tiny")' || exit 1
bash scripts/test-vllm.sh >"$vllm_log" 2>&1 &
vllm=$!
"$PY" -m pytest -q -p no:cacheprovider --durations=5 "${ALONGSIDE[@]}" >"$outcomes_log" 2>&1 &
outcomes=$!
ignore=()
for path in "${ALONGSIDE[@]}" tests/vllm_tier; do ignore+=("--ignore=$path"); done
"$PY" -m pytest -q --durations=15 "${ignore[@]}" "$@"
rest=$?
echo "make test: the rest took $(( $(date +%s) - start )) s"
wait "$outcomes"
demo=$?
echo "---------------- ${ALONGSIDE[*]} (run alongside; done at $(( $(date +%s) - start )) s) ----------------"
cat "$outcomes_log"
wait "$vllm"
tier=$?
echo "---------------- scripts/test-vllm.sh (run alongside) ----------------"
cat "$vllm_log"
if [ "$rest" -ne 0 ] || [ "$demo" -ne 0 ] || [ "$tier" -ne 0 ]; then
    echo "make test: FAILED (the rest: exit $rest; ${ALONGSIDE[*]}: exit $demo; vLLM tier: exit $tier)"
    exit 1
fi
echo "make test: passed in $(( $(date +%s) - start )) s"
