#!/usr/bin/env bash
# `npm test`: set up, then every test: TypeScript (vitest) and Python (pytest), with one summary.
# Tests start their own Temporal and MinIO servers on free ports; nothing here needs the stack.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bash "$ROOT/infra/setup.sh"

source "$ROOT/infra/tool-env.sh"

reports="$(mktemp -d)"
pytest_pid=""
trap '[[ -z "$pytest_pid" ]] || kill -- "-$pytest_pid" 2>/dev/null || true; rm -rf "$reports"' EXIT

cd "$ROOT"
status=0
# pytest runs beside vitest, on the CPU time vitest leaves: much of vitest's goes waiting on
# servers, timers and retries, and one after the other the two took over 30 minutes on 2 cores.
# At the lowest priority, so that vitest's tests, which kill and restart things against the clock,
# run as they would alone: in a session of its own whose autogroup is niced too, since under
# Linux's autogroup scheduling a plain `nice` ranks processes only within their session, and each
# trainer vitest starts has a session of its own. Its output follows vitest's.
log "pytest, in the background at the lowest priority (its output follows vitest's)"
(cd trainer-py && exec setsid bash -c 'echo 19 2>/dev/null > /proc/self/autogroup; exec nice -n 19 "$@"' pytest \
  "$VENV/bin/python" -m pytest -q --durations=10 --junitxml="$reports/pytest.xml") > "$reports/pytest.log" 2>&1 &
pytest_pid=$!
log "typecheck"
npx tsc --noEmit || status=1
log "vitest"
npx vitest run --reporter=default --reporter=json --outputFile.json="$reports/vitest.json" || status=1
log "pytest"
wait "$pytest_pid" || status=1
pytest_pid=""
cat "$reports/pytest.log"

# CI shows only the tail of the log: the summary names every test that failed or was skipped, and
# fails the run for a skipped test as surely as for a failed one.
"$VENV/bin/python" "$ROOT/infra/test_summary.py" "$reports" "$status" || exit 1
exit "$status"
