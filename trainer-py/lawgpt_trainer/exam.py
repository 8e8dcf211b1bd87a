"""Judicial-exam accuracy, two ways.

By log-likelihood (the figure that counts, lm-evaluation-harness's and C-Eval's method): every
candidate answer is scored by the log-probability the model gives it after the question's prompt,
as sft trains answers (the sorted letters, then EOS), and the likeliest candidate is the model's
choice. An untrained model sits at chance, and small improvements show.

Single-answer questions are scored against every single option, and those where several options
may be right (the source's `multi`, or an answer such as "AB") against every combination of one or
more options, as such a question's answer may be one letter. As in the source benchmarks, which
keep the two kinds apart, the prompt tells the model which kind it faces. A choice is right only if
it is exactly the answer. Chance is one over the number of candidates (1/4 for four options with
one answer, 1/15 where several may be right).

By generation (the second figure): greedy decoding, then prompt.extract_choice on what was written."""

from dataclasses import replace
from itertools import combinations

import torch

from lawgpt_trainer import generate, prompt
from lawgpt_trainer.data import ExamQuestion


def candidates(q: ExamQuestion) -> list[str]:
    letters = sorted(q.options)
    if not q.multi:
        return letters
    return ["".join(c) for k in range(1, len(letters) + 1) for c in combinations(letters, k)]


def question_prompt(tokenizer, q: ExamQuestion) -> list[int]:
    """The question as sft trains it, asking for the letters alone."""
    return prompt.prompt_ids(tokenizer, prompt.exam_sample(replace(q, analysis=None)).instruction)


@torch.no_grad()
def loglik_choices(model, tokenizer, questions: list[ExamQuestion], batch_size: int, progress) -> list[dict]:
    """Per question: its candidates' log-likelihoods and the likeliest one; `progress` hears of every
    batch of candidates scored."""
    items = []
    for qi, q in enumerate(questions):
        context = question_prompt(tokenizer, q)
        items += [(qi, candidate, context, prompt.response_ids(tokenizer, candidate)) for candidate in candidates(q)]
    # Longest first: a batch too large for the GPU fails at once, and similar lengths share batches.
    order = sorted(range(len(items)), key=lambda i: -len(items[i][2]) - len(items[i][3]))
    scores: list[dict[str, float]] = [{} for _ in questions]
    for start in range(0, len(order), batch_size):
        batch = [items[i] for i in order[start : start + batch_size]]
        answer_len = max(len(item[3]) for item in batch)
        inputs = generate.left_padded([context + answer for _, _, context, answer in batch], tokenizer.unk_token_id, model.device)
        # Only the positions that predict answer tokens need the vocabulary-wide projection; scoring
        # decodes nothing, so no KV cache either.
        logits = model(**inputs, logits_to_keep=answer_len + 1, use_cache=False).logits[:, :-1].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        for row, (qi, candidate, _, answer) in enumerate(batch):
            positions = torch.arange(answer_len - len(answer), answer_len, device=logprobs.device)
            scores[qi][candidate] = logprobs[row, positions, torch.tensor(answer, device=logprobs.device)].sum().item()
        progress(len(batch))
    return [{"scores": s, "chosen": max(s, key=s.get)} for s in scores]


def generated_choices(model, tokenizer, questions: list[ExamQuestion], max_new_tokens: int, batch_size: int, progress) -> list[dict]:
    """Per question: what greedy decoding wrote, and the choice read from it."""
    written = generate.greedy(model, tokenizer, [question_prompt(tokenizer, q) for q in questions], max_new_tokens, batch_size, progress)
    return [{"generated": text, "chosen": prompt.extract_choice(text, "".join(q.options))} for q, text in zip(questions, written)]
