"""eval: how well a model predicts held-out legal text, against the base model it grew from and
the model after continued pretraining (one figure per phase), how it answers held-out
judicial-exam questions (exam.py), and how close its answers to short-answer questions (case
analyses) come to the reference ones (short_answer.py).

Every model is scored on the exam by log-likelihood too: instruction tuning targets the exam's
answers, so `exam_answer_logprob` (the mean log-probability of the right answer, a figure that
moves before accuracy does on a small model) of the final model against the pretrained one shows
what sft bought.

Perplexity depends on the vocabulary, so the comparison with the base model (a different
tokenizer) is in bits per character of the held-out side: each tokenizer's blocks are spread
evenly over the same held-out documents, and where `max_heldout_blocks` caps them they are
samples of it, not the same characters. Models run one at a time on the
GPU when there is one (devices.py), in batches of `batch_size`, halved while a batch does not fit."""

import gc
import hashlib
import json
import math
from collections import defaultdict
from pathlib import Path

import torch
from accelerate.utils import find_executable_batch_size
from transformers import AutoTokenizer

from lawgpt_trainer import data, exam, generate, packing, short_answer

# Earlier models of the run scored on the held-out side, by input name -> metric prefix.
COMPARED = {"base_model": "base", "pretrained_model": "pretrained"}


def characters(tokenizer, blocks: packing.Blocks, batch_size: int = 256) -> int:
    """Characters of text the held-out blocks hold: the denominator of bits per character. Counted
    once per tokenizer, not per model scored: the final and the pretrained model share their blocks."""
    return sum(len(text) for start in range(0, len(blocks), batch_size) for text in tokenizer.batch_decode(blocks.rows(start, start + batch_size), skip_special_tokens=True))


@torch.no_grad()
def language_modelling(model, blocks: packing.Blocks, chars: int, batch_size: int, advance=lambda blocks: None) -> dict:
    """Perplexity per token and bits per character over the held-out blocks, which hold `chars`
    characters; `advance(n)` after each batch of n blocks."""
    if not len(blocks):
        return {"blocks": 0}
    nats = predicted = 0
    for start in range(0, len(blocks), batch_size):
        ids = torch.from_numpy(blocks.rows(start, start + batch_size)).to(model.device)
        # Every position of a full block is predicted: the mean loss times their number is the sum.
        count = ids.shape[0] * (ids.shape[1] - 1)
        # No KV cache: scoring never decodes, and a 7B's for 8 blocks of 1,024 tokens is 4 GB.
        nats += model(input_ids=ids, labels=ids, use_cache=False).loss.float().item() * count
        predicted += count
        advance(ids.shape[0])
    return {"blocks": len(blocks), "perplexity": math.exp(nats / predicted), "bits_per_char": nats / math.log(2) / max(chars, 1)}


def fitting(batch_size: int, score):
    """`score(batch_size)`, retried with half the batch while the GPU runs out of memory (accelerate
    would take a tenth off at a time, every try rerunning the pass from the start)."""
    size = batch_size

    def halved() -> int:
        nonlocal size
        size //= 2
        return size

    return find_executable_batch_size(score, starting_batch_size=batch_size, reduce_batch_size_fn=halved)()


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# A question where several options may be right is scored against every combination of them:
# 255 at 8 options, 65,535 at 16 (tens of minutes a question on a GPU), 67 million at 26.
MAX_MULTI_OPTIONS = 8


def scored_questions(request: dict, bad: data.BadRecords, events=None) -> list[data.ExamQuestion]:
    """The exam questions eval scores: the held-out part (by the exam's own share where the config
    gives one), but for multiple-answer ones with over MAX_MULTI_OPTIONS options (`events` told how
    many), at most `max_exam_questions` of them spread evenly over the exam: the first ones would
    be those the exam's file lists first, often one subject."""
    if "exam" not in request["inputs"]:
        return []
    questions = data.read_exam(request["inputs"]["exam"], bad)
    heldout = data.split_exam(questions, data.exam_heldout_percent(request["split"]))[1]
    scorable = [q for q in heldout if not (q.multi and len(q.options) > MAX_MULTI_OPTIONS)]
    if len(scorable) < len(heldout) and events:
        events.log(f"{len(heldout) - len(scorable)} held-out exam questions left out: several of their over {MAX_MULTI_OPTIONS} options may be right, too many combinations to score", level="warning")
    limit = min(len(scorable), request["config"]["max_exam_questions"])
    return [scorable[i * len(scorable) // limit] for i in range(limit)]


def run(request: dict, events) -> tuple[dict, dict]:
    config, inputs, out = request["config"], request["inputs"], Path(request["output_dir"])
    corpus_percent, bad = request["split"]["heldout_percent"], data.BadRecords.of(request, events)
    questions = scored_questions(request, bad, events)
    short_answer_items = data.read_short_answer_questions(inputs["short_answer"], config["max_short_answers"], bad) if "short_answer" in inputs else []
    models = {"model": "final"} | {name: prefix for name, prefix in COMPARED.items() if name in inputs}
    candidates = sum(len(exam.candidates(q)) for q in questions)

    # Held-out blocks per tokenizer, with their characters: the final and the pretrained model share them.
    prepared: dict[str, tuple[packing.Blocks, int]] = {}

    def heldout(tokenizer) -> tuple[packing.Blocks, int]:
        key = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:16]
        if key not in prepared:
            folder = out / "heldout-blocks" / key
            packing.prepare(inputs["corpus"], request["cleaning"], corpus_percent, tokenizer, config["block_size"], folder, splits=("heldout",), bad=bad)
            blocks = packing.load(folder, config["block_size"], heldout_limit=config["max_heldout_blocks"])[1]
            prepared[key] = blocks, characters(tokenizer, blocks)
        return prepared[key]

    # Every tokenizer's blocks before the first progress report: each reads the whole corpus
    # (minutes at LaWGPT's size) without reporting, and the orchestrator takes a trainer that has
    # reported progress and then goes silent for runtime.stall_timeout_seconds for hung.
    # A step per block scored: a pass over thousands of them takes longer than the stall timeout.
    scored_blocks = sum(len(heldout(AutoTokenizer.from_pretrained(inputs[name]))[0]) for name in models)
    progress = Progress(events, scored_blocks + len(models) * candidates + len(questions) + len(short_answer_items))

    scored, by_subject, answers, on_exam, short_answer_results = {}, {"loglik": defaultdict(list), "generated": defaultdict(list)}, [], {}, []
    def score(name: str, prefix: str) -> None:
        # Its own scope: the model is gone once this returns, before the next one is loaded.
        tokenizer, model = generate.load(inputs[name])
        blocks, chars = heldout(tokenizer)
        scored[prefix] = fitting(config["batch_size"], lambda b: language_modelling(model, blocks, chars, b, progress.advance))
        likeliest = fitting(config["batch_size"], lambda b: exam.loglik_choices(model, tokenizer, questions, b, progress.advance)) if questions else []
        if questions:
            on_exam[prefix] = {
                "accuracy": sum(ll["chosen"] == q.answer for q, ll in zip(questions, likeliest)) / len(questions),
                "answer_logprob": sum(ll["scores"][q.answer] for q, ll in zip(questions, likeliest)) / len(questions),
            }
        if name == "model" and questions:
            written = fitting(config["batch_size"], lambda b: exam.generated_choices(model, tokenizer, questions, config["max_new_tokens"], b, progress.advance))
            for q, ll, gen in zip(questions, likeliest, written):
                subject = q.subject or "unknown"
                by_subject["loglik"][subject].append(ll["chosen"] == q.answer)
                by_subject["generated"][subject].append(gen["chosen"] == q.answer)
                answers.append({"key": q.key, "expected": q.answer, "chosen": ll["chosen"], "scores": ll["scores"], "chosen_generated": gen["chosen"], "generated": gen["generated"]})
        if name == "model" and short_answer_items:
            short_answer_results.extend(fitting(config["batch_size"], lambda b: short_answer.answered(model, tokenizer, short_answer_items, config["short_answer_max_new_tokens"], b, progress.advance)))

    for name, prefix in models.items():
        score(name, prefix)
        _free_memory()

    accuracy = lambda results: sum(sum(v) for v in results.values()) / len(questions) if questions else None  # noqa: E731
    held_out = scored["final"]
    metrics = {
        "heldout_blocks": held_out["blocks"],
        "heldout_perplexity": held_out.get("perplexity"),
        "heldout_bits_per_char": held_out.get("bits_per_char"),
        **{f"{prefix}_heldout_bits_per_char": scored[prefix].get("bits_per_char") for prefix in COMPARED.values() if prefix in scored},
        "exam_questions": len(questions),
        "exam_accuracy": accuracy(by_subject["loglik"]),
        "exam_chance_accuracy": sum(1 / len(exam.candidates(q)) for q in questions) / len(questions) if questions else None,
        "exam_accuracy_generated": accuracy(by_subject["generated"]),
        "exam_answer_logprob": on_exam.get("final", {}).get("answer_logprob"),
        **{f"{prefix}_exam_{figure}": on_exam[prefix][figure] for prefix in COMPARED.values() if prefix in on_exam for figure in ("accuracy", "answer_logprob")},
        "short_answer_questions": len(short_answer_items),
        "short_answer_rouge_l": sum(c["rouge_l"] for c in short_answer_results) / len(short_answer_items) if short_answer_items else None,
        "skipped_records": bad.count,
        "on_gpu": int(torch.cuda.is_available()),
    }
    report = {
        **metrics,
        **{f"{prefix}_heldout_perplexity": scored[prefix].get("perplexity") for prefix in COMPARED.values() if prefix in scored},
        "exam_accuracy_by_subject": {s: sum(v) / len(v) for s, v in sorted(by_subject["loglik"].items())},
        "exam_accuracy_generated_by_subject": {s: sum(v) / len(v) for s, v in sorted(by_subject["generated"].items())},
        "answers": answers,
        "short_answer_results": short_answer_results,
    }
    (out / "report").mkdir(parents=True, exist_ok=True)
    (out / "report" / "report.json").write_text(json.dumps(_finite(report), ensure_ascii=False, indent=2, allow_nan=False), "utf-8")
    return {"report": "report"}, {k: v for k, v in metrics.items() if v is not None and math.isfinite(v)}


def _finite(value):
    """`value` with every NaN or infinity (a diverged model's perplexity, a -inf log-probability)
    as None: JSON has no such numbers, and readers other than Python's refuse them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class Progress:
    """Progress events over the whole stage: a step per held-out block and exam item scored, per
    model, and per short-answer question answered."""

    def __init__(self, events, total: int):
        self.events, self.total, self.done = events, total, 0
        events.progress(0, total)

    def advance(self, steps: int) -> None:
        self.done = min(self.total, self.done + steps)
        self.events.progress(self.done, self.total)
