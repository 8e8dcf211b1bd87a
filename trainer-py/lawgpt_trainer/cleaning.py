"""Corpus cleaning, applied the same way by every stage that reads the corpus (vocab, pretrain,
eval), before the held-out split: the vocabulary is trained on the text the model will see.

Full-width Latin letters and digits (Ａ１) become half-width and the ideographic space a space,
so one word is not learned twice; full-width CJK punctuation (，。：) is the norm in Chinese text
and stays. Zero-width spaces and byte-order marks, invisible but each a token, are removed. Runs
of spaces collapse, lines are trimmed, and blank-line runs shrink to one."""

import hashlib
import re

from lawgpt_trainer.data import Document
from lawgpt_trainer.errors import InvalidInput

# Full-width letters and digits as half-width ones, and the ideographic space as a space.
HALF_WIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F) if chr(code - 0xFEE0).isalnum()} | {0x3000: ord(" ")}
_INVISIBLE = {0x200B: None, 0xFEFF: None}
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize(text: str, normalize_width: bool) -> str:
    if normalize_width:
        text = text.translate(HALF_WIDTH)
    text = text.translate(_INVISIBLE)
    lines = (_SPACES.sub(" ", line).strip() for line in text.splitlines())
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip() + "\n"


def clean_text(text: str, cleaning: dict) -> tuple[str, bytes] | None:
    """One document normalised, with the digest that finds its repeats; None when it is shorter
    than `min_chars` after normalising."""
    text = normalize(text, cleaning["normalize_width"])
    if len(text.strip()) < cleaning["min_chars"]:
        return None
    return text, hashlib.sha256(text.encode("utf-8")).digest()


def clean(docs: list[Document], cleaning: dict, skipped: int = 0) -> tuple[list[Document], dict]:
    """The documents worth training on, in their order, and what was dropped: documents shorter
    than `min_chars` after normalising, and repeats of an earlier document's text (`skipped`: bad
    records already left out when reading, for the report)."""
    kept, seen, short, duplicate = [], set(), 0, 0
    for doc in docs:
        cleaned = clean_text(doc.text, cleaning)
        if cleaned is None:
            short += 1
            continue
        text, digest = cleaned
        if cleaning["deduplicate"] and digest in seen:
            duplicate += 1
            continue
        seen.add(digest)
        kept.append(Document(key=doc.key, text=text))
    return kept, report(len(docs), short, duplicate, skipped)


def report(documents: int, short: int, duplicate: int, skipped: int) -> dict:
    """What cleaning did, as every stage that reads the corpus reports it."""
    return {"corpus_documents": documents, "corpus_dropped_short": short, "corpus_dropped_duplicate": duplicate, "skipped_records": skipped}


def nothing_left(corpus: str, files: int, documents: int) -> InvalidInput:
    if not documents:
        return InvalidInput(f"corpus {corpus} has no text: its {files} files are blank or unreadable")
    return InvalidInput(f"cleaning left no document of the corpus's {documents} (see data.cleaning)")
