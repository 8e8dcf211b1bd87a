"""The closing summary of `npm test`: counts from the vitest JSON and pytest JUnit reports, the name
of every test that did not pass, and an exit status that is 1 unless every test ran and passed.

Usage: test_summary.py REPORTS_DIR RUNNERS_STATUS"""

import json, sys, xml.etree.ElementTree as ET
from pathlib import Path

reports, status = Path(sys.argv[1]), sys.argv[2]
counts = {"passed": 0, "failed": 0, "skipped": 0}
named = []
if (reports / "vitest.json").exists():
    v = json.loads((reports / "vitest.json").read_text())
    counts["passed"] += v["numPassedTests"]
    counts["failed"] += v["numFailedTests"] + v.get("numRuntimeErrorTestSuites", 0)
    counts["skipped"] += v["numPendingTests"] + v["numTodoTests"]
    for file in v["testResults"]:
        if file["status"] == "failed" and not file["assertionResults"]:
            named.append(f"failed  {file['name']}: {file.get('message', '')[:300]}")
        for test in file["assertionResults"]:
            if test["status"] != "passed":
                named.append(f"{test['status']:<8}{test['fullName']}")
if (reports / "pytest.xml").exists():
    suite = ET.parse(reports / "pytest.xml").getroot().find("testsuite")
    failed = int(suite.get("failures")) + int(suite.get("errors"))
    counts["failed"] += failed
    counts["skipped"] += int(suite.get("skipped"))
    counts["passed"] += int(suite.get("tests")) - failed - int(suite.get("skipped"))
    for case in suite.iter("testcase"):
        for outcome in ("failure", "error", "skipped"):
            if case.find(outcome) is not None:
                named.append(f"{outcome:<8}{case.get('classname')}::{case.get('name')}")
ok = status == "0" and counts["failed"] == 0 and counts["skipped"] == 0
print()
for line in named:
    print(line)
print(f"{'OK' if ok else 'FAILED'}: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped (vitest + pytest)")
sys.exit(0 if ok else 1)
