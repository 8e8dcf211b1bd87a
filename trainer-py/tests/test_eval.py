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
    advanced = []
    result = language_modelling(model, blocks, chars, batch_size=2, advance=advanced.append)
    # Progress after every batch: a pass over thousands of blocks must not look hung.
    assert advanced == [2, 1]
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


def test_case_analyses_are_answered_in_full_and_scored_against_the_reference(pipeline, tiny_data):
    report = json.loads((pipeline["eval"].output_dir / "report" / "report.json").read_text("utf-8"))
    metrics = pipeline["eval"].completed()["metrics"]
    first = [json.loads(line) for line in tiny_data["short_answer"].read_text("utf-8").splitlines()][:3]
    assert metrics["short_answer_questions"] == 3
    assert [a["key"] for a in report["short_answer_results"]] == [str(r["id"]) for r in first]
    from lawgpt_trainer.short_answer import rouge_l

    assert all(a["generated"] and a["rouge_l"] == rouge_l(a["generated"], r["output"]) for a, r in zip(report["short_answer_results"], first))
    assert metrics["short_answer_rouge_l"] == pytest.approx(sum(a["rouge_l"] for a in report["short_answer_results"]) / 3)


def test_rouge_l_counts_the_longest_common_subsequence_of_characters():
    import random

    from lawgpt_trainer.short_answer import lcs_length, rouge_l

    def dynamic(a, b):
        row = [0] * (len(b) + 1)
        for ch in a:
            previous, row = row, [0]
            for j, other in enumerate(b):
                row.append(previous[j] + 1 if ch == other else max(previous[j + 1], row[j]))
        return row[-1]

    rng = random.Random(0)
    for _ in range(50):
        a, b = ("".join(rng.choice("判决被告人罪刑") for _ in range(rng.randint(0, 90))) for _ in range(2))
        assert lcs_length(a, b) == dynamic(a, b), (a, b)
    assert rouge_l("被告人 犯危险驾驶罪", "被告人犯危险驾驶罪。") == pytest.approx(2 * 9 / (9 + 10))
    assert rouge_l("", "判决") == 0.0 and rouge_l("判决", "判决") == 1.0


def test_the_exam_questions_scored_are_its_own_heldout_share(tiny_data):
    from lawgpt_trainer.data import BadRecords, read_exam
    from lawgpt_trainer.stages.eval import scored_questions

    request = lambda split, limit: {"inputs": {"exam": str(tiny_data["exam"])}, "split": split, "config": {"max_exam_questions": limit}}  # noqa: E731
    every = read_exam(str(tiny_data["exam"]))
    shared = scored_questions(request({"heldout_percent": 20}, 1000), BadRecords())
    assert 0 < len(shared) < len(every)
    # The whole exam held out, whatever share of the corpus is.
    assert scored_questions(request({"heldout_percent": 2, "exam_heldout_percent": 100}, 1000), BadRecords()) == every
    # Fewer than the exam holds: spread over it, not its first ones (often one subject).
    five = scored_questions(request({"heldout_percent": 2, "exam_heldout_percent": 100}, 5), BadRecords())
    assert len(five) == 5 and five[0] == every[0] and five[-1] in every[len(every) * 4 // 5 :]
    assert scored_questions({"inputs": {}, "split": {"heldout_percent": 20}, "config": {"max_exam_questions": 5}}, BadRecords()) == []


def test_a_multiple_answer_question_with_too_many_options_to_score_is_left_out(tmp_path):
    from lawgpt_trainer.data import BadRecords
    from lawgpt_trainer.stages.eval import MAX_MULTI_OPTIONS, scored_questions

    letters = "ABCDEFGHIJKLMNOP"
    wide = {"id": "wide", "question": "以下哪些属于民事法律行为？", "options": {k: f"选项{k}" for k in letters}, "answer": "AB"}
    single = {**wide, "id": "single", "answer": "A"}
    four = {**wide, "id": "four", "options": {k: f"选项{k}" for k in "ABCD"}}
    path = tmp_path / "exam.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in (wide, single, four)), "utf-8")
    logged = []

    class Events:
        def log(self, message, level):
            logged.append((level, message))

    request = {"inputs": {"exam": str(path)}, "split": {"heldout_percent": 2, "exam_heldout_percent": 100}, "config": {"max_exam_questions": 10}}
    assert [q.key for q in scored_questions(request, BadRecords(), Events())] == ["single", "four"]
    assert logged == [("warning", f"1 held-out exam questions left out: several of their over {MAX_MULTI_OPTIONS} options may be right, too many combinations to score")]


def test_a_batch_that_does_not_fit_is_halved_until_one_does():
    from lawgpt_trainer.stages.eval import fitting

    tried = []

    def score(batch_size):
        tried.append(batch_size)
        if batch_size > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return batch_size

    assert fitting(8, score) == 2
    assert tried == [8, 4, 2]


def test_scoring_builds_no_kv_cache(pipeline, tiny_data, tmp_path):
    from lawgpt_trainer import data, exam, generate, packing
    from lawgpt_trainer.stages.eval import language_modelling

    tokenizer, model = generate.load(pipeline["sft"].output_dir / "model")
    caches = []
    model.register_forward_hook(lambda module, args, output: caches.append(output.past_key_values))
    packing.prepare(str(tiny_data["corpus"]), CLEANING, 20, tokenizer, 64, tmp_path, splits=("heldout",))
    language_modelling(model, packing.load(tmp_path, 64, heldout_limit=2)[1], 1, batch_size=2)
    exam.loglik_choices(model, tokenizer, data.read_exam(tiny_data["exam"], data.BadRecords())[:2], 4, lambda n: None)
    assert len(caches) >= 2
    assert all(cache is None for cache in caches)


def test_each_model_is_gone_before_the_next_is_loaded(pipeline, tiny_data, monkeypatch, tmp_path):
    import io
    import weakref

    from conftest import CONFIGS, write_request
    from lawgpt_trainer import generate
    from lawgpt_trainer.events import EventStream
    from lawgpt_trainer.stages import eval as eval_stage

    loaded, alive_at_load = [], []
    load = generate.load

    def watched(path):
        alive_at_load.append([ref() is not None for ref in loaded])
        tokenizer, model = load(path)
        loaded.append(weakref.ref(model))
        return tokenizer, model

    monkeypatch.setattr(generate, "load", watched)
    inputs = {"model": pipeline["sft"].output_dir / "model", "corpus": tiny_data["corpus"], "exam": tiny_data["exam"],
              "base_model": pipeline["base"].output_dir / "model", "pretrained_model": pipeline["pretrain"].output_dir / "model"}  # fmt: skip
    request = json.loads(write_request("eval", inputs, tmp_path, {**CONFIGS["eval"], "max_exam_questions": 2}).read_text("utf-8"))
    eval_stage.run(request, EventStream(io.StringIO()))
    assert alive_at_load == [[], [False], [False, False]]
