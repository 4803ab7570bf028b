#!/usr/bin/env bash
# `make test`: every test, in two pytest processes side by side. The demo's outcome tests (one `posttrain demo`
# run and the RL runs from its checkpoints, ~8 of the suite's ~20 minutes on 2 cores) go in one process, the rest
# in the other; runs pick their thread count from the load they see (posttrain/cpu.py), so the two share the
# cores instead of oversubscribing them. The tiny model is built first: both processes read it from the cache.
# Exit status: non-zero when either process fails; both logs are printed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
OUTCOMES=tests/test_demo_outcomes.py
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

"$PY" -c 'from posttrain.models.load import resolve_model_dir; resolve_model_dir("tiny")' || exit 1
"$PY" -m pytest -q -p no:cacheprovider --durations=5 "$OUTCOMES" >"$log" 2>&1 &
outcomes=$!
"$PY" -m pytest -q --durations=15 --ignore="$OUTCOMES" "$@"
rest=$?
wait "$outcomes"
demo=$?
echo "---------------- $OUTCOMES (run alongside) ----------------"
cat "$log"
if [ "$rest" -ne 0 ] || [ "$demo" -ne 0 ]; then
    echo "make test: FAILED (the rest: exit $rest; $OUTCOMES: exit $demo)"
    exit 1
fi
