"""Short-answer questions (DISC-Law-Eval's subjective part: case analyses) answered in full by
greedy decoding and scored by ROUGE-L against the reference answer: the F1 of the longest common
subsequence of characters, since Chinese has no spaces to split words at (LawBench also scores its
generation tasks by ROUGE-L, over jieba's words and weighted otherwise: the figures do not
compare). A reference figure, not a judge's verdict: it rewards an answer that says what the court
said, in its order, and gives nothing for a right answer in other words."""

from lawgpt_trainer import generate, prompt
from lawgpt_trainer.data import ShortAnswerQuestion


def lcs_length(a: str, b: str) -> int:
    """Length of the longest common subsequence, bit-parallel (Hyyrö): one big-integer step per
    character of `b`, so a 1,000-character answer against its reference costs milliseconds."""
    if not a or not b:
        return 0
    where: dict[str, int] = {}
    for i, ch in enumerate(a):
        where[ch] = where.get(ch, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for ch in b:
        u = v & where.get(ch, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def rouge_l(answer: str, reference: str) -> float:
    """ROUGE-L F1 over characters, whitespace left out."""
    a, r = "".join(answer.split()), "".join(reference.split())
    common = lcs_length(a, r)
    return 0.0 if common == 0 else 2 * common / (len(a) + len(r))


def answered(model, tokenizer, questions: list[ShortAnswerQuestion], max_new_tokens: int, batch_size: int, progress) -> list[dict]:
    """Per question: what the model wrote, asked with the shared template, and its ROUGE-L."""
    prompts = [prompt.prompt_ids(tokenizer, q.question) for q in questions]
    written = generate.greedy(model, tokenizer, prompts, max_new_tokens, batch_size, progress)
    return [{"key": q.key, "generated": text, "rouge_l": rouge_l(text, q.reference)} for q, text in zip(questions, written)]
