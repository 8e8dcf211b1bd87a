"""eval: held-out perplexity on legal text and judicial-exam accuracy of a model."""

import json
import math
from collections import defaultdict
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lawgpt_trainer import data, packing, prompt


@torch.no_grad()
def perplexity(model, blocks: list[torch.Tensor]) -> float:
    losses = [model(input_ids=b[None], labels=b[None]).loss.item() for b in blocks]
    return math.exp(sum(losses) / len(losses))


@torch.no_grad()
def answer(model, tokenizer, question: data.ExamQuestion, max_new_tokens: int) -> str:
    sample = prompt.exam_sample(question)
    ids = [tokenizer.bos_token_id] + tokenizer(prompt.render_prompt(sample.instruction), add_special_tokens=False)["input_ids"]
    generated = model.generate(
        input_ids=torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.unk_token_id,
    )
    return tokenizer.decode(generated[0, len(ids) :], skip_special_tokens=True)


def run(request: dict, events) -> tuple[dict, dict]:
    config, inputs, out = request["config"], request["inputs"], Path(request["output_dir"])
    percent = request["split"]["heldout_percent"]
    tokenizer = AutoTokenizer.from_pretrained(inputs["model"])
    model = AutoModelForCausalLM.from_pretrained(inputs["model"]).eval()

    _, heldout_docs = data.split_documents(data.read_corpus(inputs["corpus"]), percent)
    blocks = packing.pack(tokenizer, heldout_docs, config["block_size"])[: config["max_heldout_blocks"]]
    ppl = perplexity(model, blocks) if blocks else float("nan")
    questions = data.split_exam(data.read_exam(inputs["exam"]), percent)[1] if "exam" in inputs else []
    questions = questions[: config["max_exam_questions"]]
    total = len(questions) + 1
    events.progress(1, total)

    by_subject: dict[str, list[bool]] = defaultdict(list)
    answers = []
    for i, q in enumerate(questions, start=2):
        text = answer(model, tokenizer, q, config["max_new_tokens"])
        chosen = prompt.extract_choice(text, "".join(q.options))
        by_subject[q.subject or "unknown"].append(chosen == q.answer)
        answers.append({"key": q.key, "expected": q.answer, "chosen": chosen, "generated": text})
        events.progress(i, total)

    correct = sum(sum(v) for v in by_subject.values())
    report = {
        "heldout_perplexity": ppl,
        "heldout_blocks": len(blocks),
        "exam_questions": len(questions),
        "exam_accuracy": correct / len(questions) if questions else None,
        "exam_accuracy_by_subject": {s: sum(v) / len(v) for s, v in sorted(by_subject.items())},
        "answers": answers,
    }
    (out / "report").mkdir(parents=True, exist_ok=True)
    (out / "report" / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), "utf-8")
    metrics = {"heldout_perplexity": ppl, "heldout_blocks": len(blocks), "exam_questions": len(questions)}
    if questions:
        metrics["exam_accuracy"] = report["exam_accuracy"]
    return {"report": "report"}, {k: v for k, v in metrics.items() if math.isfinite(v)}
