"""Reading the pipeline's data formats, with errors that name file, line and field, and the
held-out split every stage applies the same way."""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from lawgpt_trainer.errors import InvalidInput

CORPUS_SUFFIXES = (".md", ".txt")


@dataclass(frozen=True)
class Document:
    key: str
    text: str


@dataclass(frozen=True)
class Sample:
    """One instruction-tuning example: the prompt built from `instruction` and `input` is not
    trained on, `output` is."""

    instruction: str
    input: str
    output: str


@dataclass(frozen=True)
class ExamQuestion:
    key: str
    question: str
    options: dict[str, str]
    answer: str
    subject: str | None
    # Worked reasoning for the answer, where the source has it: trained on after the letters.
    analysis: str | None = None


def is_heldout(key: str, heldout_percent: int) -> bool:
    """Stable across runs, machines and data order: decided by the item's key alone."""
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) % 100 < heldout_percent


def corpus_files(root: str) -> list[tuple[Path, str]]:
    """The corpus's documents in their one order, as (path, key); the key names the document in
    the held-out split and in errors."""
    base = Path(root)
    files = sorted(p for p in base.rglob("*") if p.is_file() and p.suffix in CORPUS_SUFFIXES)
    if not files:
        raise InvalidInput(f"corpus {root} has no {'/'.join(CORPUS_SUFFIXES)} files")
    return [(path, str(path.relative_to(base))) for path in files]


def read_text(path: Path, key: str) -> str:
    try:
        return path.read_text("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInput(f"{key}: not UTF-8 text ({e})") from e


def read_corpus(root: str) -> list[Document]:
    """Every non-blank document, in memory: for the stages that need the whole text at once."""
    docs = (Document(key=key, text=read_text(path, key)) for path, key in corpus_files(root))
    return [d for d in docs if d.text.strip()]


def split_documents(docs: list[Document], heldout_percent: int) -> tuple[list[Document], list[Document]]:
    train = [d for d in docs if not is_heldout(d.key, heldout_percent)]
    heldout = [d for d in docs if is_heldout(d.key, heldout_percent)]
    if not train or not heldout:
        # A corpus too small to split still gets a held-out document, so evaluation always has text.
        train, heldout = docs[:-1] or docs, docs[-1:]
    return train, heldout


def read_jsonl(path: str):
    """Yields (line_number, record) for every non-blank line; a broken line names itself."""
    name = Path(path).name
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise InvalidInput(f"{name}:{number}: not valid JSON ({e.msg})") from e
            if not isinstance(record, dict):
                raise InvalidInput(f"{name}:{number}: expected a JSON object")
            yield number, record


def _field(name: str, number: int, record: dict, field: str, kind: type):
    value = record.get(field)
    if not isinstance(value, kind) or (kind is str and not value.strip()):
        raise InvalidInput(f"{name}:{number}: field '{field}' must be a non-empty {kind.__name__}")
    return value


def read_dialogue(path: str, answers: str, limit: int) -> list[Sample]:
    """Lawyer consultations `{question, answers[]}`: one sample per answer (`all`), or one per
    question with the `first` or the `longest` answer (the fullest one, when several lawyers answered)."""
    name, samples = Path(path).name, []
    for number, record in read_jsonl(path):
        question = _field(name, number, record, "question", str)
        replies = _field(name, number, record, "answers", list)
        if not replies or not all(isinstance(a, str) and a.strip() for a in replies):
            raise InvalidInput(f"{name}:{number}: field 'answers' must be a non-empty list of strings")
        picked = {"all": replies, "first": replies[:1], "longest": [max(replies, key=len)]}[answers]
        for reply in picked:
            samples.append(Sample(instruction=question, input="", output=reply))
        if len(samples) >= limit:
            break
    return samples[:limit]


def read_instructions(path: str, limit: int) -> list[Sample]:
    """Alpaca-shape records `{instruction, input?, output}` (worked exam reasoning, BenTsao's QA)."""
    name, samples = Path(path).name, []
    for number, record in read_jsonl(path):
        instruction = _field(name, number, record, "instruction", str)
        output = _field(name, number, record, "output", str)
        extra = record.get("input", "")
        if not isinstance(extra, str):
            raise InvalidInput(f"{name}:{number}: field 'input' must be a string")
        samples.append(Sample(instruction=instruction, input=extra, output=output))
        if len(samples) >= limit:
            break
    return samples


def read_exam(path: str) -> list[ExamQuestion]:
    """Multiple-choice questions `{id?, question, options{letter: text}, answer, subject?, analysis?}`."""
    name, questions = Path(path).name, []
    for number, record in read_jsonl(path):
        question = _field(name, number, record, "question", str)
        options = _field(name, number, record, "options", dict)
        answer = _field(name, number, record, "answer", str).strip().upper()
        if not all(isinstance(k, str) and len(k) == 1 and isinstance(v, str) for k, v in options.items()):
            raise InvalidInput(f"{name}:{number}: field 'options' must map single letters to text")
        if not set(answer) <= set(options):
            raise InvalidInput(f"{name}:{number}: field 'answer' {answer!r} names a letter not in 'options'")
        subject = record.get("subject")
        if subject is not None and not isinstance(subject, str):
            raise InvalidInput(f"{name}:{number}: field 'subject' must be a string")
        analysis = record.get("analysis")
        if analysis is not None and not (isinstance(analysis, str) and analysis.strip()):
            raise InvalidInput(f"{name}:{number}: field 'analysis' must be a non-empty string")
        key = str(record.get("id") or question)
        questions.append(ExamQuestion(key, question, options, "".join(sorted(answer)), subject, analysis))
    if not questions:
        raise InvalidInput(f"{name}: no questions")
    return questions


def split_exam(questions: list[ExamQuestion], heldout_percent: int) -> tuple[list[ExamQuestion], list[ExamQuestion]]:
    train = [q for q in questions if not is_heldout(q.key, heldout_percent)]
    heldout = [q for q in questions if is_heldout(q.key, heldout_percent)]
    return train, heldout
