"""Reading the pipeline's data formats, with errors that name file, line and field, and the
held-out split every stage applies the same way."""

import codecs
import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from itertools import islice
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
    # A consultation's later answer: the conversation before its question, a turn each, which
    # `input` joins. Where it would leave the answer too little of sft.cutoff_len, its oldest turns
    # are left out (prompt.encode).
    history: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExamQuestion:
    # Names the question in eval's report (the source's id, else its text); the split goes by content.
    key: str
    question: str
    options: dict[str, str]
    answer: str
    subject: str | None
    # Worked reasoning for the answer, where the source has it: trained on after the letters.
    analysis: str | None = None
    # Whether several options may be right (the source's `multi`): the question is asked, and
    # scored, as that kind.
    multi: bool = False

    def __post_init__(self):
        # An answer of several letters makes it so, whatever the source says.
        if len(self.answer) > 1:
            object.__setattr__(self, "multi", True)


@dataclass(frozen=True)
class KnowledgeEntry:
    """What a medical knowledge graph (BenTsao's cMeKG) says of one entity: its relations, each
    with its values in the graph's order, e.g. {"相关症状": ["头痛", "恶心"]}."""

    entity: str
    relations: dict[str, list[str]]


@dataclass(frozen=True)
class ShortAnswerQuestion:
    """A question answered in full (DISC-Law-Eval's case analyses), scored against a reference."""

    key: str
    question: str
    reference: str


def is_heldout(key: str, heldout_percent: int) -> bool:
    """Stable across runs, machines and data order: decided by the item's key alone."""
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) % 100 < heldout_percent


class BadRecord(ValueError):
    """A record that was read but cannot be used (a missing field, an answer that is no option)."""


class BadRecords:
    """What a stage does with a record it cannot use (`data.on_bad_record`): with `fail` the first
    one stops the stage with an error naming it (file, and line where there is one); with `skip`
    each is dropped, logged (the first few) and counted once however often it is read, for the
    stage's `skipped_records` metric. A line longer than `max_line_chars` is a bad record too: a
    50 MB "line" is a broken export, not a paragraph. Without a request (tests, benchmarks): fail,
    and no line limit."""

    LOGGED = 10

    def __init__(self, on_bad_record: str = "fail", max_line_chars: int | None = None, events=None):
        self.skip = on_bad_record == "skip"
        self.max_line_chars = max_line_chars
        self.events = events
        self._seen: set[str] = set()

    @classmethod
    def of(cls, request: dict, events=None) -> "BadRecords":
        return cls(request["on_bad_record"], request["max_line_chars"], events)

    @property
    def count(self) -> int:
        return len(self._seen)

    def reject(self, where: str, problem: str) -> None:
        message = f"{where}: {problem}"
        if not self.skip:
            raise InvalidInput(message)
        if message in self._seen:
            return
        self._seen.add(message)
        if self.events and len(self._seen) <= self.LOGGED:
            self.events.log(f"skipped a bad record (data.on_bad_record=skip): {message}", level="warning")



def long_line(line: str, max_line_chars: int | None) -> str | None:
    """What is wrong with a line over the limit, if it is."""
    if max_line_chars is not None and len(line) > max_line_chars:
        return f"a line of {len(line):,} characters, over data.max_line_chars ({max_line_chars:,})"
    return None


# A corpus file larger than this (a dump of many judgments in one .txt) is read as parts of about
# this size, each cut after a line end and each a document of its own: read whole, one file would
# take several times its size in a worker's memory, and its text would fall on one side of the
# held-out split, all of it (a corpus of that file alone: on both).
PART_BYTES = 64 << 20


@dataclass(frozen=True)
class Source:
    """Where a corpus document is: a whole file, or the bytes [start, end) of a large one."""

    path: Path
    key: str
    start: int = 0
    end: int | None = None

    @property
    def size(self) -> int:
        return (self.path.stat().st_size if self.end is None else self.end) - self.start

    def where(self, line: int | None = None) -> str:
        """The document, or one of its lines, as bad-record messages name it."""
        part = f" (the part from byte {self.start:,})" if self.end is not None else ""
        return f"{self.path}{part}" + (f":{line}" if line is not None else "")


def _sources(path: Path, key: str) -> list[Source]:
    size = path.stat().st_size
    if size <= PART_BYTES:
        return [Source(path, key)]
    parts, start = [], 0
    with path.open("rb") as f:
        while start < size:
            f.seek(start + PART_BYTES)
            f.readline()
            end = min(f.tell(), size)
            parts.append(Source(path, f"{key}@{start}", start, end))
            start = end
    return parts


def corpus_files(root: str, events=None) -> list[Source]:
    """The corpus's documents in their one order; a document's key names it in the held-out split.
    Files of other kinds are left out, and `events` told how many."""
    base = Path(root)
    found = sorted(p for p in base.rglob("*") if p.is_file())
    files = [p for p in found if p.suffix.lower() in CORPUS_SUFFIXES]
    if not files:
        raise InvalidInput(f"corpus {root} has no {'/'.join(CORPUS_SUFFIXES)} files")
    others = [str(p.relative_to(base)) for p in found if p.suffix.lower() not in CORPUS_SUFFIXES]
    if others and events:
        # A corpus exported as JSON lines, say, would otherwise train on its few text files alone, silently.
        events.log(f"the corpus's {len(others):,} files that are not {'/'.join(CORPUS_SUFFIXES)} are left out, e.g. {', '.join(others[:3])}", level="warning")
    return [source for path in files for source in _sources(path, str(path.relative_to(base)))]


def read_document(source: Source, max_line_chars: int | None) -> tuple[str | None, list[tuple[str, str]]]:
    """A corpus document's text without its over-long lines (None if it is no UTF-8 text), and its
    problems as (where, what) for BadRecords.reject; plain data, so that a worker process can
    return it."""
    with source.path.open("rb") as f:
        f.seek(source.start)
        raw = f.read(source.size)
    try:
        # utf-8-sig: a byte-order mark (as Windows editors save) is no part of the text. Parts are
        # cut after a line end, which is never inside a character.
        text = raw.decode("utf-8-sig" if source.start == 0 else "utf-8")
    except UnicodeDecodeError as e:
        return None, [(source.where(), f"not UTF-8 text ({e})")]
    if max_line_chars is None or len(text) <= max_line_chars:
        return text, []
    kept, problems = [], []
    # Lines as cleaning reads them (str.splitlines): a file saved with old Mac line ends, CR alone,
    # would otherwise be one line over the limit.
    for number, line in enumerate(text.splitlines(), start=1):
        problem = long_line(line, max_line_chars)
        if problem:
            problems.append((source.where(number), problem))
        else:
            kept.append(line)
    return "\n".join(kept), problems


def read_corpus(root: str, bad: BadRecords | None = None) -> list[Document]:
    """Every non-blank document, in memory: the plain reading that the stages do a file at a time in
    worker processes (packing), and what tests hold them to."""
    bad = bad or BadRecords()
    docs = []
    for source in corpus_files(root):
        text, problems = read_document(source, bad.max_line_chars)
        for where, problem in problems:
            bad.reject(where, problem)
        if text is not None and text.strip():
            docs.append(Document(key=source.key, text=text))
    return docs


def split_documents(docs: list[Document], heldout_percent: int) -> tuple[list[Document], list[Document]]:
    train = [d for d in docs if not is_heldout(d.key, heldout_percent)]
    heldout = [d for d in docs if is_heldout(d.key, heldout_percent)]
    if not train or not heldout:
        # A corpus too small to split still gets a held-out document, so evaluation always has text.
        train, heldout = docs[:-1] or docs, docs[-1:]
    return train, heldout


def _is_json_array(path: str) -> bool:
    """Whether the file's first character after any byte-order mark and white space is '[': read a
    piece at a time, since a minified array is one line of the whole file."""
    with open(path, "rb") as f:
        if f.read(len(codecs.BOM_UTF8)) != codecs.BOM_UTF8:
            f.seek(0)
        while piece := f.read(1 << 16):
            if piece.strip():
                return piece.lstrip().startswith(b"[")
    return False


def _decoded(path: str, bad: BadRecords):
    """(where, value) for every record of a JSONL file, or of a JSON array file (the `.json` that
    Alpaca's and BenTsao's own scripts read), read whole: such files are megabytes, and the line
    limit is for JSONL. What does not decode (a line that is no JSON, or no UTF-8: one stray byte
    in a scraped export) goes to `bad`; an array file that does not is refused."""
    if _is_json_array(path):
        try:
            records = json.loads(Path(path).read_text("utf-8-sig"))
        except UnicodeDecodeError as e:
            raise InvalidInput(f"{path}: not UTF-8 text ({e.reason} at byte {e.start:,})") from None
        except json.JSONDecodeError as e:
            # More after a first value: JSONL whose first line is an array (a bad record, below).
            if e.msg != "Extra data":
                raise InvalidInput(f"{path}: not a valid JSON array ({e.msg}, line {e.lineno} column {e.colno})") from None
        else:
            yield from ((f"{path}: record {number}", record) for number, record in enumerate(records, start=1))
            return
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            where = f"{path}:{number}"
            try:
                # Any line may begin with a byte-order mark: `cat` of two Windows exports.
                line = raw.decode("utf-8-sig")
            except UnicodeDecodeError as e:
                bad.reject(where, f"not UTF-8 text ({e.reason} at byte {e.start:,} of the line)")
                continue
            if not line.strip():
                continue
            problem = long_line(line.rstrip("\r\n"), bad.max_line_chars)
            if problem:
                bad.reject(where, problem)
                continue
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                bad.reject(where, f"not valid JSON ({e.msg})")


def read_records(path: str, bad: BadRecords, parse):
    """parse(record) for every usable record, in order; a record that is no JSON object, a line too
    long, or a record that parse refuses (BadRecord) goes to `bad`. A file read to its end without
    one usable record is refused whatever `bad` skips: an empty export, or records of another shape,
    would otherwise train on nothing of it, silently."""
    usable, bad_before = 0, bad.count
    for where, record in _decoded(path, bad):
        if not isinstance(record, dict):
            bad.reject(where, "expected a JSON object")
            continue
        try:
            parsed = parse(record)
        except BadRecord as e:
            bad.reject(where, str(e))
            continue
        usable += 1
        yield parsed
    if not usable:
        raise InvalidInput(f"{path}: no usable records (see the bad records logged before this)" if bad.count > bad_before else f"{path}: no records")


def _field(record: dict, field: str, kind: type):
    value = record.get(field)
    if not isinstance(value, kind) or (kind is str and not value.strip()):
        raise BadRecord(f"field '{field}' must be a non-empty {kind.__name__}")
    return value


# A multi-turn consultation's turns, as lawyer-llama writes them: "[客户] …", "[律师] …".
_TURN = re.compile(r"\s*[\[【](客户|律师)[\]】]\s*[:：]?\s*(.*)", re.DOTALL)


def _conversation(record: dict) -> list[list[Sample]]:
    """A multi-turn consultation `{turns[], query?, laws?}`: a sample per lawyer's answer, the
    client's words just before it as its question and the conversation before those as its
    material. A speaker's consecutive turns are one (a lawyer's "此外…" goes on the same answer); a
    lawyer who speaks first answers nothing, and a client's last words go unanswered."""
    said: list[tuple[str, str]] = []
    for number, turn in enumerate(_field(record, "turns", list), start=1):
        found = _TURN.fullmatch(turn) if isinstance(turn, str) else None
        if not found:
            raise BadRecord(f"turn {number} of field 'turns' must be a string starting with [客户] or [律师]")
        speaker, text = found[1], found[2].strip()
        if text and said and said[-1][0] == speaker:
            said[-1] = (speaker, f"{said[-1][1]}\n{text}")
        elif text:
            said.append((speaker, text))
    turns = [f"{who}：{words}" for who, words in said]
    answered = [
        [Sample(instruction=said[i - 1][1], input="\n".join(turns[: i - 1]), output=text, history=tuple(turns[: i - 1]))]
        for i, (speaker, text) in enumerate(said)
        if speaker == "律师" and i > 0
    ]
    if not answered:
        raise BadRecord("field 'turns' holds no lawyer's answer to a client")
    return answered


def _dialogue(record: dict) -> list[list[Sample]]:
    """The record's questions, each with its answers as samples: a consultation `{question,
    answers[]}` is one question that one or more lawyers answered, a multi-turn one a question per
    lawyer's answer (_conversation)."""
    if "turns" in record:
        return _conversation(record)
    question, replies = _field(record, "question", str), _field(record, "answers", list)
    if not all(a is None or isinstance(a, str) for a in replies):
        raise BadRecord("field 'answers' must be a list of strings")
    # A blank entry is an answer nobody wrote; the lawyers who did answer still count.
    replies = [a for a in replies if a and a.strip()]
    if not replies:
        raise BadRecord("field 'answers' must hold at least one non-blank answer")
    return [[Sample(instruction=question, input="", output=reply) for reply in replies]]


def read_dialogue(path: str, answers: str, limit: int, bad: BadRecords | None = None) -> list[Sample]:
    """The first `limit` lawyer consultations, `{question, answers[]}` or multi-turn `{turns[]}`
    (_dialogue): for each question, a sample per answer (`all`), or the `first` or the `longest`
    answer (the fullest one, when several lawyers answered)."""
    samples = []
    for questions in islice(read_records(path, bad or BadRecords(), _dialogue), limit):
        for replies in questions:
            samples += {"all": replies, "first": replies[:1], "longest": [max(replies, key=lambda s: len(s.output))]}[answers]
    return samples


def _instruction(record: dict) -> Sample:
    instruction, output, extra = _field(record, "instruction", str), _field(record, "output", str), record.get("input") or ""
    if not isinstance(extra, str):
        raise BadRecord("field 'input' must be a string")
    return Sample(instruction=instruction, input=extra, output=output)


def read_instructions(path: str, limit: int, bad: BadRecords | None = None) -> list[Sample]:
    """Alpaca-shape records `{instruction, input?, output}` (worked exam reasoning, BenTsao's QA)."""
    return list(islice(read_records(path, bad or BadRecords(), _instruction), limit))


# The field that names a knowledge-graph record's entity; every other field is a relation, but for
# a database's own fields ("_id" in a MongoDB export), which say nothing of the entity.
ENTITY_FIELD = "中心词"


def _knowledge(record: dict) -> KnowledgeEntry:
    entity = _field(record, ENTITY_FIELD, str).strip()
    relations: dict[str, list[str]] = {}
    for name, value in record.items():
        if name == ENTITY_FIELD or name.startswith("_"):
            continue
        values = [] if value is None else [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise BadRecord(f"field '{name}' must be a string or a list of strings")
        # The graph lists some values twice, and blanks say nothing; so does a name written twice.
        kept = [v.strip() for v in values if v.strip()]
        if kept and name.strip():
            relations[name.strip()] = list(dict.fromkeys(relations.get(name.strip(), []) + kept))
    if not relations:
        raise BadRecord(f"the record says nothing of {entity!r}: no field besides '{ENTITY_FIELD}' holds a value")
    return KnowledgeEntry(entity, relations)


def read_knowledge(path: str, limit: int, bad: BadRecords | None = None) -> list[KnowledgeEntry]:
    """Knowledge-graph records in cMeKG's shape `{中心词, <relation>: [values] or value, ...}`,
    e.g. {"中心词": "偏头痛", "相关症状": ["头痛", …], "所属科室": ["神经内科"]}."""
    return list(islice(read_records(path, bad or BadRecords(), _knowledge), limit))


# What stands between or around the letters of an answer in the wild: "A,B", "A、B", "A B",
# "A和B", "A.", "(D)", "【D】".
_ANSWER_SEPARATORS = re.compile(r"[\s,，、;；/.。和及与()\[\]【】]+")


def _letters(text: str) -> str:
    """Option letters as the exam's sources write them, in one form: full-width ones (Ａ) half-width,
    upper case, separators gone."""
    return _ANSWER_SEPARATORS.sub("", unicodedata.normalize("NFKC", text)).upper()


def _exam_question(record: dict) -> ExamQuestion:
    question, given = _field(record, "question", str), _field(record, "options", dict)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in given.items()):
        raise BadRecord("field 'options' must map single letters to text")
    options = {_letters(k): v for k, v in given.items()}
    if len(options) < len(given) or not all(len(k) == 1 and "A" <= k <= "Z" for k in options):
        raise BadRecord("field 'options' must map single letters to text")
    answer = "".join(sorted(set(_letters(_field(record, "answer", str)))))
    if not answer or not set(answer) <= set(options):
        raise BadRecord(f"field 'answer' {record['answer']!r} names a letter not in 'options'")
    multi = record.get("multi")
    if multi is not None and not isinstance(multi, bool):
        raise BadRecord("field 'multi' must be true or false")
    subject = record.get("subject")
    if subject is not None and not isinstance(subject, str):
        raise BadRecord("field 'subject' must be a string")
    analysis = record.get("analysis")
    if analysis is not None and not (isinstance(analysis, str) and analysis.strip()):
        raise BadRecord("field 'analysis' must be a non-empty string")
    key = str(record.get("id") or question)
    return ExamQuestion(key, question, options, answer, subject, analysis, bool(multi))


def read_exam(path: str, bad: BadRecords | None = None) -> list[ExamQuestion]:
    """Multiple-choice questions `{id?, question, options{letter: text}, answer, multi?, subject?, analysis?}`."""
    return list(read_records(path, bad or BadRecords(), _exam_question))


# Letters and digits only, width folded: copies of a bar-exam question differ in punctuation.
_NOT_TEXT = re.compile(r"[\W_]+")
# Characters in a row that a sample must share with a question to quote it: well past the
# boilerplate questions share ("下列说法正确的是").
QUOTE_CHARS = 30


def _bare(text: str) -> str:
    return _NOT_TEXT.sub("", unicodedata.normalize("NFKC", text))


def quotes_any(questions: list[ExamQuestion]):
    """A test of whether a sample quotes one of `questions`: shares QUOTE_CHARS characters in a row
    with one (letters and digits), in its instruction or input. Copies of a bar-exam question in
    other collections differ in punctuation, a year or their last clause, so a whole-text match
    would miss them."""
    runs = {text[i : i + QUOTE_CHARS] for text in (_bare(q.question) for q in questions) for i in range(len(text) - QUOTE_CHARS + 1)}

    def quotes(sample: Sample) -> bool:
        said = _bare(sample.instruction + sample.input)
        return any(said[i : i + QUOTE_CHARS] in runs for i in range(len(said) - QUOTE_CHARS + 1))

    return quotes


def _content_key(q: ExamQuestion) -> str:
    return re.sub(r"\s+", "", q.question + "".join(f"{k}{v}" for k, v in sorted(q.options.items())))


def exam_heldout_percent(split: dict) -> int:
    """The exam's held-out share (data.split): its own where the config gives one, else the corpus's."""
    return split.get("exam_heldout_percent") or split["heldout_percent"]


def split_exam(questions: list[ExamQuestion], heldout_percent: int) -> tuple[list[ExamQuestion], list[ExamQuestion]]:
    """Split by what a question says, not by its id: the sources repeat questions under new ids,
    and a copy trained on would otherwise be scored as held out."""
    train = [q for q in questions if not is_heldout(_content_key(q), heldout_percent)]
    heldout = [q for q in questions if is_heldout(_content_key(q), heldout_percent)]
    return train, heldout


def _short_answer_question(record: dict) -> ShortAnswerQuestion:
    question, reference = _field(record, "input", str), _field(record, "output", str)
    return ShortAnswerQuestion(str(record.get("id") or question), question, reference)


def read_short_answer_questions(path: str, limit: int, bad: BadRecords | None = None) -> list[ShortAnswerQuestion]:
    """Questions with reference answers `{id?, input, output}`: for evaluation alone, so all are held out."""
    return list(islice(read_records(path, bad or BadRecords(), _short_answer_question), limit))
