"""Exam scoring by the log-likelihood of each candidate answer, and by generation."""

import json
import math

import pytest
import torch

from lawgpt_trainer import data, exam, generate, prompt


@pytest.fixture(scope="module")
def model(pipeline):
    return generate.load(pipeline["sft"].output_dir / "model")


@pytest.fixture(scope="module")
def questions(tiny_data):
    return data.read_exam(str(tiny_data["exam"]))[:6]


def test_single_answers_compete_with_single_options_and_several_with_combinations():
    q = data.ExamQuestion("k", "问", {"A": "甲", "B": "乙", "C": "丙", "D": "丁"}, "B", None)
    assert exam.candidates(q) == ["A", "B", "C", "D"]
    several = exam.candidates(data.ExamQuestion("k", "问", q.options, "AC", None))
    assert len(several) == 15 and several[:4] == ["A", "B", "C", "D"] and several[-1] == "ABCD"
    # The prompt says which kind it is: where several may be right, one letter may be the answer.
    kinds = [prompt.exam_sample(data.ExamQuestion("k", "问", q.options, "B", None, multi=multi)).instruction.split("\n")[0] for multi in (False, True)]
    assert "单项选择题" in kinds[0] and "不定项选择题" in kinds[1]


def test_a_candidate_scores_what_the_model_gives_its_tokens_after_the_prompt(model, questions):
    tokenizer, lm = model
    q = questions[0]
    chosen = exam.loglik_choices(lm, tokenizer, [q], batch_size=4, progress=lambda n: None)[0]
    context = exam.question_prompt(tokenizer, q)
    for candidate, score in chosen["scores"].items():
        answer = prompt.response_ids(tokenizer, candidate)
        with torch.no_grad():
            logprobs = torch.log_softmax(lm(torch.tensor([context + answer])).logits[0].float(), dim=-1)
        expected = sum(logprobs[len(context) - 1 + i, token].item() for i, token in enumerate(answer))
        assert score == pytest.approx(expected, abs=1e-4), candidate
    assert chosen["chosen"] == max(chosen["scores"], key=chosen["scores"].get)


def test_batches_with_padding_score_as_one_question_at_a_time(model, questions):
    tokenizer, lm = model
    batched = exam.loglik_choices(lm, tokenizer, questions, batch_size=7, progress=lambda n: None)
    alone = [exam.loglik_choices(lm, tokenizer, [q], batch_size=1, progress=lambda n: None)[0] for q in questions]
    for a, b in zip(batched, alone):
        assert a["scores"].keys() == b["scores"].keys()
        assert all(a["scores"][c] == pytest.approx(b["scores"][c], abs=1e-4) for c in a["scores"])


def test_batched_generation_writes_what_one_question_at_a_time_writes(model, questions):
    tokenizer, lm = model
    written = exam.generated_choices(lm, tokenizer, questions, max_new_tokens=5, batch_size=4, progress=lambda n: None)
    for q, found in zip(questions, written):
        instruction = prompt.exam_sample(q).instruction
        assert found["generated"] == generate.answer(tokenizer, lm, instruction, 5, temperature=0.0)
        assert found["chosen"] == prompt.extract_choice(found["generated"], "".join(q.options))


def test_the_report_gives_both_accuracies_beside_chance(pipeline):
    run = pipeline["eval"]
    report = json.loads((run.output_dir / "report" / "report.json").read_text("utf-8"))
    answers = report["answers"]
    assert report["exam_accuracy"] == sum(a["chosen"] == a["expected"] for a in answers) / len(answers)
    assert report["exam_accuracy_generated"] == sum(a["chosen_generated"] == a["expected"] for a in answers) / len(answers)
    chance = sum(1 / len(a["scores"]) for a in answers) / len(answers)
    assert report["exam_chance_accuracy"] == pytest.approx(chance)
    assert all(a["chosen"] in a["scores"] and math.isfinite(max(a["scores"].values())) for a in answers)
    assert run.completed()["metrics"]["exam_chance_accuracy"] == pytest.approx(chance)
