"""eval: held-out perplexity and exam accuracy, written as a report."""

import json
import math

import pytest

from conftest import CLEANING


def test_report_has_perplexity_and_per_question_answers(pipeline):
    run = pipeline["eval"]
    report = json.loads((run.output_dir / "report" / "report.json").read_text("utf-8"))
    assert math.isfinite(report["heldout_perplexity"]) and report["heldout_perplexity"] > 1
    assert report["exam_questions"] == len(report["answers"]) > 0
    correct = sum(a["chosen"] == a["expected"] for a in report["answers"])
    assert report["exam_accuracy"] == correct / len(report["answers"])
    assert run.completed()["metrics"]["heldout_perplexity"] == report["heldout_perplexity"]
    assert report["skipped_records"] == run.completed()["metrics"]["skipped_records"] == 0


def test_base_model_is_compared_in_bits_per_character(pipeline):
    metrics = pipeline["eval"].completed()["metrics"]
    assert 0 < metrics["heldout_bits_per_char"] < 100
    assert 0 < metrics["base_heldout_bits_per_char"] < 100
    # Even a few steps of training on legal text beat the untrained base on held-out legal text.
    assert metrics["heldout_bits_per_char"] < metrics["base_heldout_bits_per_char"]


def test_each_phase_is_scored_on_the_same_heldout_text(pipeline):
    metrics = pipeline["eval"].completed()["metrics"]
    report = json.loads((pipeline["eval"].output_dir / "report" / "report.json").read_text("utf-8"))
    # The model after continued pretraining (phase 1) already predicts legal text better than the base.
    assert metrics["pretrained_heldout_bits_per_char"] < metrics["base_heldout_bits_per_char"]
    assert report["pretrained_heldout_perplexity"] > 1


def test_bits_per_char_and_perplexity_agree_on_the_same_text(pipeline, tiny_data, tmp_path):
    from lawgpt_trainer import generate, packing
    from lawgpt_trainer.stages.eval import characters, language_modelling

    tokenizer, model = generate.load(pipeline["sft"].output_dir / "model")
    packing.prepare(str(tiny_data["corpus"]), CLEANING, 20, tokenizer, 64, tmp_path, splits=("heldout",))
    blocks = packing.load(tmp_path, 64, heldout_limit=3)[1]
    chars = sum(len(tokenizer.decode(blocks.row(i), skip_special_tokens=True)) for i in range(3))
    assert characters(tokenizer, blocks, batch_size=2) == chars
    result = language_modelling(model, blocks, chars, batch_size=2)
    # Perplexity is per predicted token (63 per block of 64); bits per char spreads the same nats over characters.
    expected = math.log(result["perplexity"]) * 3 * 63 / math.log(2) / chars
    assert result["blocks"] == 3
    assert abs(result["bits_per_char"] - expected) < 1e-9
    # Batches are only a way to go faster: one block at a time gives the same figures.
    assert language_modelling(model, blocks, chars, batch_size=1)["perplexity"] == pytest.approx(result["perplexity"], rel=1e-5)


def test_the_pretrained_model_is_scored_on_the_exam_as_the_final_one(pipeline):
    metrics = pipeline["eval"].completed()["metrics"]
    report = json.loads((pipeline["eval"].output_dir / "report" / "report.json").read_text("utf-8"))
    answers = report["answers"]
    # The mean log-probability of the right answer, from the same scores the final model chose by.
    assert metrics["exam_answer_logprob"] == pytest.approx(sum(a["scores"][a["expected"]] for a in answers) / len(answers))
    assert metrics["exam_answer_logprob"] < 0 and metrics["pretrained_exam_answer_logprob"] < 0
    # sft trained the final model on the other exam questions; the pretrained one saw none.
    assert metrics["pretrained_exam_answer_logprob"] != metrics["exam_answer_logprob"]
    assert 0 <= metrics["pretrained_exam_accuracy"] <= 1


def test_the_report_stays_json_when_a_model_diverges():
    from lawgpt_trainer.stages.eval import _finite

    report = {"heldout_perplexity": math.inf, "answers": [{"scores": {"A": -math.inf, "B": -1.5}}], "loss": math.nan, "n": 3}
    assert json.loads(json.dumps(_finite(report), allow_nan=False)) == {"heldout_perplexity": None, "answers": [{"scores": {"A": None, "B": -1.5}}], "loss": None, "n": 3}
