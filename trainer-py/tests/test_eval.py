"""eval: held-out perplexity and exam accuracy, written as a report."""

import json
import math


def test_report_has_perplexity_and_per_question_answers(pipeline):
    run = pipeline["eval"]
    report = json.loads((run.output_dir / "report" / "report.json").read_text("utf-8"))
    assert math.isfinite(report["heldout_perplexity"]) and report["heldout_perplexity"] > 1
    assert report["exam_questions"] == len(report["answers"]) > 0
    correct = sum(a["chosen"] == a["expected"] for a in report["answers"])
    assert report["exam_accuracy"] == correct / len(report["answers"])
    assert run.completed()["metrics"]["heldout_perplexity"] == report["heldout_perplexity"]
