"""eval: how well a model predicts held-out legal text, against the base model it grew from and
the model after continued pretraining (one figure per phase), and how it answers held-out
judicial-exam questions.

Perplexity depends on the vocabulary, so the comparison with the base model (a different
tokenizer) is in bits per character of the same held-out text."""

import json
import math
from collections import defaultdict
from pathlib import Path

import torch

from lawgpt_trainer import cleaning, data, generate, packing, prompt


@torch.no_grad()
def language_modelling(model, tokenizer, docs: list[data.Document], block_size: int, max_blocks: int) -> dict:
    """Perplexity per token and bits per character over the first `max_blocks` held-out blocks."""
    blocks = packing.pack(tokenizer, docs, block_size)[:max_blocks]
    if not blocks:
        return {"blocks": 0}
    nats = sum(model(input_ids=b[None], labels=b[None]).loss.item() * (len(b) - 1) for b in blocks)
    predicted = sum(len(b) - 1 for b in blocks)
    chars = sum(len(tokenizer.decode(b, skip_special_tokens=True)) for b in blocks)
    return {"blocks": len(blocks), "perplexity": math.exp(nats / predicted), "bits_per_char": nats / math.log(2) / max(chars, 1)}


# Earlier models of the run scored on the same held-out text, by input name -> metric prefix.
COMPARED = {"base_model": "base", "pretrained_model": "pretrained"}


def exam(model, tokenizer, questions: list[data.ExamQuestion], max_new_tokens: int, events) -> tuple[list[dict], dict[str, list[bool]]]:
    by_subject: dict[str, list[bool]] = defaultdict(list)
    answers = []
    for i, q in enumerate(questions, start=1):
        text = generate.answer(tokenizer, model, prompt.exam_sample(q).instruction, max_new_tokens, temperature=0.0)
        chosen = prompt.extract_choice(text, "".join(q.options))
        by_subject[q.subject or "unknown"].append(chosen == q.answer)
        answers.append({"key": q.key, "expected": q.answer, "chosen": chosen, "generated": text})
        events.progress(i + 1, len(questions) + 1)
    return answers, by_subject


def run(request: dict, events) -> tuple[dict, dict]:
    config, inputs, out = request["config"], request["inputs"], Path(request["output_dir"])
    percent = request["split"]["heldout_percent"]
    tokenizer, model = generate.load(inputs["model"])

    _, heldout_docs = data.split_documents(cleaning.read_corpus(request)[0], percent)
    held_out = language_modelling(model, tokenizer, heldout_docs, config["block_size"], config["max_heldout_blocks"])
    compared = {}
    for name, prefix in COMPARED.items():
        if name in inputs:
            earlier_tokenizer, earlier = generate.load(inputs[name])
            compared[prefix] = language_modelling(earlier, earlier_tokenizer, heldout_docs, config["block_size"], config["max_heldout_blocks"])
    questions = data.split_exam(data.read_exam(inputs["exam"]), percent)[1][: config["max_exam_questions"]] if "exam" in inputs else []
    events.progress(1, len(questions) + 1)
    answers, by_subject = exam(model, tokenizer, questions, config["max_new_tokens"], events)

    metrics = {
        "heldout_blocks": held_out["blocks"],
        "heldout_perplexity": held_out.get("perplexity"),
        "heldout_bits_per_char": held_out.get("bits_per_char"),
        **{f"{prefix}_heldout_bits_per_char": result.get("bits_per_char") for prefix, result in compared.items()},
        "exam_questions": len(questions),
        "exam_accuracy": sum(sum(v) for v in by_subject.values()) / len(questions) if questions else None,
    }
    report = {
        **metrics,
        **{f"{prefix}_heldout_perplexity": result.get("perplexity") for prefix, result in compared.items()},
        "exam_accuracy_by_subject": {s: sum(v) / len(v) for s, v in sorted(by_subject.items())},
        "answers": answers,
    }
    (out / "report").mkdir(parents=True, exist_ok=True)
    (out / "report" / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), "utf-8")
    return {"report": "report"}, {k: v for k, v in metrics.items() if v is not None and math.isfinite(v)}
