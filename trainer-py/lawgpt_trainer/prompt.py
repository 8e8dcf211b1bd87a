"""The one prompt template (templates/legal_advisor.json), used by training and evaluation alike."""

import json
import re
from functools import cache
from importlib import resources

from lawgpt_trainer import cleaning
from lawgpt_trainer.data import ExamQuestion, KnowledgeEntry, Sample


@cache
def template() -> dict:
    return json.loads(resources.files(__package__).joinpath("templates/legal_advisor.json").read_text("utf-8"))


def render_prompt(instruction: str, input: str = "") -> str:
    t = template()
    return t["prompt_with_input"].format(instruction=instruction, input=input) if input else t["prompt"].format(instruction=instruction)


def prompt_ids(tokenizer, instruction: str, input: str = "") -> list[int]:
    """BOS and the rendered prompt: what sft trains the response after, and generation starts from."""
    return [tokenizer.bos_token_id] + tokenizer(render_prompt(instruction, input), add_special_tokens=False)["input_ids"]


IGNORE_INDEX = -100  # label value the loss skips


def response_ids(tokenizer, response: str) -> list[int]:
    """A response as sft trains it and eval scores it: its tokens, then EOS."""
    return tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def encode(tokenizer, sample: Sample, cutoff_len: int) -> dict:
    """BOS + prompt (masked out of the loss) + response + EOS, cut to cutoff_len tokens. A
    conversation's history gives up its oldest turns where the prompt would leave the response
    less than half the cutoff (or less than all of it, where shorter): the turns nearest the
    question matter most, and whole, the history of a third or later answer filled the cutoff."""
    prompt = prompt_ids(tokenizer, sample.instruction, sample.input)
    response = response_ids(tokenizer, sample.output)
    room = cutoff_len - min(len(response), cutoff_len // 2)
    if sample.history and len(prompt) > room:
        prompt = _recent_history(tokenizer, sample, room)
    return {"input_ids": (prompt + response)[:cutoff_len], "labels": ([IGNORE_INDEX] * len(prompt) + response)[:cutoff_len]}


def _recent_history(tokenizer, sample: Sample, room: int) -> list[int]:
    """The prompt with the fewest oldest turns of the history left out that make it at most `room`
    tokens (all of them, if none do), found by halving: a conversation may have hundreds of turns."""
    turns = sample.history
    shortened = lambda dropped: prompt_ids(tokenizer, sample.instruction, "\n".join(turns[dropped:]))  # noqa: E731
    low, high = 1, len(turns)
    while low < high:
        middle = (low + high) // 2
        if len(shortened(middle)) <= room:
            high = middle
        else:
            low = middle + 1
    return shortened(low)


def exam_sample(q: ExamQuestion) -> Sample:
    """The question as an instruction asking for the answer letters (first line, where
    extract_choice reads them) and, when the source has worked reasoning, the reasoning after."""
    t = template()
    fields = {"kind": t["exam_kind"]["multi" if q.multi else "single"], "question": q.question, "options": "\n".join(f"{letter}. {text}" for letter, text in sorted(q.options.items()))}
    if q.analysis:
        return Sample(instruction=t["exam_reasoning_instruction"].format(**fields), input="", output=f"{q.answer}\n{q.analysis}")
    return Sample(instruction=t["exam_instruction"].format(**fields), input="", output=q.answer)


def knowledge_samples(entry: KnowledgeEntry) -> list[Sample]:
    """Questions on a knowledge-graph entity answered with the graph's own values, so that nothing
    in an answer is invented: one per relation ("偏头痛的相关症状有哪些？"), and, where there are
    several, one asking about the entity whose answer holds them all."""
    t = template()["knowledge"]
    said = {relation: t["separator"].join(values) for relation, values in entry.relations.items()}
    samples = []
    for relation, values in entry.relations.items():
        kind = "one" if len(values) == 1 else "several"
        fields = {"entity": entry.entity, "relation": relation, "values": said[relation]}
        samples.append(Sample(instruction=t[f"question_{kind}"].format(**fields), input="", output=t[f"answer_{kind}"].format(**fields)))
    if len(said) == 1:
        return samples
    overview = "\n".join(t["overview_line"].format(relation=relation, values=values) for relation, values in said.items())
    return samples + [Sample(instruction=t["overview_question"].format(entity=entry.entity), input="", output=overview)]


# A group of option letters, as a model writes one choice: "B", "AC", "A、C", "A和C". Spaces and
# semicolons part groups: they part a choice from the next clause ("答案：B；A项错误", "B A错误").
_GROUP = re.compile(r"(?<![A-Z])[A-Z]+(?:\s*[、,，和与及/／]\s*[A-Z]+)*(?![A-Z])")
# What states an answer just before a group: 答案 or 选 ("答案是 D", "应选C", "故选B"), but not 选项 ("选项A", option A).
_STATED = re.compile(r"(?:答案|选(?!项))[\s:：是为应该的]*$")


def extract_choice(generated: str, letters: str) -> str:
    """The option letters a model finally chose, sorted and deduplicated ('' if none): the last
    group stated as the answer (after 答案 or 选), else the last group of option letters that does
    not merely mention an option (after 选项, or before 项 or 选项). "A和B都不对，应选C" is C;
    "C\nA项错误" is C; a word such as "ABOUT", or a group with a letter that is no option, is no
    choice. Full-width letters (Ｂ), as the exam's own answers may be written, read as half-width."""
    # Width folded as cleaning folds it: letters and digits alone (NFKC would make ℃ a C).
    generated = generated.translate(cleaning.HALF_WIDTH)
    groups = [(m.group(), generated[: m.start()], generated[m.end() :]) for m in _GROUP.finditer(generated)]

    def choice(group: str) -> str | None:
        chosen = set(re.sub(r"[^A-Z]", "", group))
        return "".join(sorted(chosen)) if chosen <= set(letters) else None

    stated = [group for group, before, _ in groups if _STATED.search(before)]
    mentioned = [group for group, before, after in groups if not before.rstrip().endswith("选项") and not re.match(r"[ \t]*选?项", after)]
    for found in (stated, mentioned):
        for group in reversed(found):
            if chosen := choice(group):
                return chosen
    return ""
