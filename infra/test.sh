#!/usr/bin/env bash
# `npm test`: set up, then every test: TypeScript (vitest) and Python (pytest), with one summary.
# Tests start their own Temporal and MinIO servers on free ports; nothing here needs the stack.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bash "$ROOT/infra/setup.sh"

source "$ROOT/infra/tool-env.sh"

reports="$(mktemp -d)"
trap 'rm -rf "$reports"' EXIT

cd "$ROOT"
status=0
log "typecheck"
npx tsc --noEmit || status=1
log "vitest"
npx vitest run --reporter=default --reporter=json --outputFile.json="$reports/vitest.json" || status=1
log "pytest"
(cd trainer-py && "$VENV/bin/python" -m pytest -q --junitxml="$reports/pytest.xml") || status=1

# CI shows only the tail of the log: the summary names every test that failed or was skipped, and
# fails the run for a skipped test as surely as for a failed one.
"$VENV/bin/python" "$ROOT/infra/test_summary.py" "$reports" "$status" || exit 1
exit "$status"
