"""The one prompt template (templates/legal_advisor.json), used by training and evaluation alike."""

import json
import re
from functools import cache
from importlib import resources

from lawgpt_trainer.data import ExamQuestion, Sample


@cache
def template() -> dict:
    return json.loads(resources.files(__package__).joinpath("templates/legal_advisor.json").read_text("utf-8"))


def render_prompt(instruction: str, input: str = "") -> str:
    t = template()
    return t["prompt_with_input"].format(instruction=instruction, input=input) if input else t["prompt"].format(instruction=instruction)


def prompt_ids(tokenizer, instruction: str, input: str = "") -> list[int]:
    """BOS and the rendered prompt: what sft trains the response after, and generation starts from."""
    return [tokenizer.bos_token_id] + tokenizer(render_prompt(instruction, input), add_special_tokens=False)["input_ids"]


def exam_sample(q: ExamQuestion) -> Sample:
    """The question as an instruction asking for the answer letters (first line, where
    extract_choice reads them) and, when the source has worked reasoning, the reasoning after."""
    options = "\n".join(f"{letter}. {text}" for letter, text in sorted(q.options.items()))
    if q.analysis:
        instruction = template()["exam_reasoning_instruction"].format(question=q.question, options=options)
        return Sample(instruction=instruction, input="", output=f"{q.answer}\n{q.analysis}")
    return Sample(instruction=template()["exam_instruction"].format(question=q.question, options=options), input="", output=q.answer)


def extract_choice(generated: str, letters: str) -> str:
    """The option letters a model chose, sorted and deduplicated ('' if none), read from the first
    line of its answer: every run of Latin letters made only of option letters ("B", "AC", "A、C")
    counts; a word such as "ABOUT" does not."""
    first_line = generated.strip().split("\n", 1)[0].upper()
    runs = re.findall(r"[A-Z]+", first_line)
    return "".join(sorted({c for run in runs if set(run) <= set(letters) for c in run}))
