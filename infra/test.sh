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

"$VENV/bin/python" - "$reports" "$status" <<'PY'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path

reports, status = Path(sys.argv[1]), sys.argv[2]
counts = {"passed": 0, "failed": 0, "skipped": 0}
if (reports / "vitest.json").exists():
    v = json.loads((reports / "vitest.json").read_text())
    counts["passed"] += v["numPassedTests"]
    counts["failed"] += v["numFailedTests"] + v.get("numRuntimeErrorTestSuites", 0)
    counts["skipped"] += v["numPendingTests"] + v["numTodoTests"]
if (reports / "pytest.xml").exists():
    suite = ET.parse(reports / "pytest.xml").getroot().find("testsuite")
    failed = int(suite.get("failures")) + int(suite.get("errors"))
    counts["failed"] += failed
    counts["skipped"] += int(suite.get("skipped"))
    counts["passed"] += int(suite.get("tests")) - failed - int(suite.get("skipped"))
verdict = "OK" if status == "0" and counts["failed"] == 0 and counts["skipped"] == 0 else "FAILED"
print(f"\n{verdict}: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped (vitest + pytest)")
PY
exit "$status"
