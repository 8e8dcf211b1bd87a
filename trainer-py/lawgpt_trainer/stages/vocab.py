"""vocab: train SentencePiece on the legal corpus and merge its new pieces into the base tokenizer
(the Chinese-LLaMA merge), then measure the merged tokenizer on held-out documents."""

import re
import tempfile
from pathlib import Path

import sentencepiece as spm

from lawgpt_trainer import data, packing
from lawgpt_trainer import tokenizer as tok
from lawgpt_trainer.errors import InvalidInput

# Text each side keeps for measuring the tokenizers on, the held-out side's once the split ends (a
# split that holds out nothing swaps the sides): rates need no more, and a large corpus holds
# gigabytes of held-out text.
SAMPLE_CHARS = 4_000_000
# After a sentence's end, where a line too long for SentencePiece is cut.
_SENTENCE_END = re.compile(r"(?<=[。！？；!?;])")


def _sentences(line: str, max_bytes: int):
    """A line as SentencePiece trains on it. It skips a sentence over max_sentence_length, counted
    in bytes (a Chinese character takes three), so a long line, a judgment's statement of facts,
    goes in pieces: cut after a sentence's end where one fits, else between characters."""
    if len(line.encode("utf-8")) <= max_bytes:
        yield line
        return
    piece, size = "", 0
    for sentence in _SENTENCE_END.split(line):
        length = len(sentence.encode("utf-8"))
        if size + length <= max_bytes:
            piece, size = piece + sentence, size + length
            continue
        if piece:
            yield piece
        while length > max_bytes:
            # At least one character, even one longer than the limit (SentencePiece skips it).
            head = sentence.encode("utf-8")[:max_bytes].decode("utf-8", "ignore") or sentence[0]
            yield head
            sentence = sentence[len(head) :]
            length = len(sentence.encode("utf-8"))
        piece, size = sentence, length
    if piece:
        yield piece


class _Side:
    """One side of the corpus's split: its lines written out for SentencePiece, and the start of
    its text kept to measure the tokenizers on."""

    def __init__(self, path: Path, max_sentence_bytes: int):
        self.path, self.max_sentence_bytes = path, max_sentence_bytes
        self.file = path.open("w", encoding="utf-8")
        self.documents = self.lines = self.sample_chars = 0
        self.sample: list[str] = []

    def add(self, side: str, source: data.Source, text: str) -> None:
        self.documents += 1
        for line in text.splitlines():
            if line.strip():
                for sentence in _sentences(line.strip(), self.max_sentence_bytes):
                    self.file.write(sentence + "\n")
                    self.lines += 1
        room = SAMPLE_CHARS - self.sample_chars
        if room > 0:
            self.sample.append(text[:room])
            self.sample_chars += len(self.sample[-1])


def _read_corpus(request: dict, events, work: Path) -> tuple[dict, dict]:
    """The corpus's sides (_Side), cleaned and split as every stage does, and the cleaning report."""
    sides = {side: _Side(work / f"{side}.txt", request["config"]["max_sentence_length"]) for side in packing.SPLITS}
    try:
        return packing.cleaned_documents(request["inputs"]["corpus"], request["cleaning"], request["split"]["heldout_percent"], sides, data.BadRecords.of(request, events))
    finally:
        for side in sides.values():
            side.file.close()


def _tokens_per_char(sp: spm.SentencePieceProcessor, texts: list[str]) -> tuple[float, int]:
    tokens = chars = broken = 0
    for text in texts:
        ids = sp.encode(text)
        tokens += len(ids)
        chars += len(text)
        broken += sp.decode(ids) != text
    return tokens / max(chars, 1), broken


def _train_sentencepiece(text: Path, prefix: str, config: dict) -> None:
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=prefix,
        model_type=config["model_type"],
        vocab_size=config["vocab_size"],
        character_coverage=config["character_coverage"],
        split_digits=config["split_digits"],
        byte_fallback=config["byte_fallback"],
        max_sentence_length=config["max_sentence_length"],
        input_sentence_size=config["input_sentence_size"],
        shuffle_input_sentence=True,
        # A small corpus may not support the configured size; take what it supports.
        hard_vocab_limit=False,
        num_threads=2,
        minloglevel=1,
    )


def _read_words(path: str) -> list[str]:
    """A word list: one word per line (blank lines and surrounding spaces ignored)."""
    try:
        text = Path(path).read_text("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InvalidInput(f"{Path(path).name}: not UTF-8 text ({e.reason} at byte {e.start:,})") from None
    words = []
    for number, line in enumerate(text.splitlines(), start=1):
        word = line.strip()
        if any(ch.isspace() for ch in word):
            raise InvalidInput(f"{Path(path).name}:{number}: a word list entry may not contain spaces: {word!r}")
        if word:
            words.append(word)
    return words


def _train_domain_model(train: _Side, config: dict, events, work: Path):
    if train.lines == 0:
        raise InvalidInput("the corpus has no text to train a vocabulary on")
    spm.set_random_generator_seed(0)
    try:
        _train_sentencepiece(train.path, f"{work}/domain", config)
    except RuntimeError as e:
        # SentencePiece reports a vocab_size too small for the corpus's characters this way.
        if "vocab_size" in str(e):
            raise InvalidInput(f"vocab.vocab_size={config['vocab_size']} does not fit this corpus: {e}") from e
        raise
    events.progress(1, 3)
    return tok.load_proto(f"{work}/domain.model")


def run(request: dict, events) -> tuple[dict, dict]:
    config, out = request["config"], Path(request["output_dir"])
    base_path = Path(request["inputs"]["base_tokenizer"]) / tok.SP_FILE
    words = _read_words(request["inputs"]["words"]) if "words" in request["inputs"] else []
    if not config["train_sentencepiece"] and not words:
        raise InvalidInput("vocab.train_sentencepiece is false and no word list was given: nothing to merge")

    # Beside the outputs, on the stage's work disk: the training side's text is about the corpus's size.
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as work:
        sides, cleaned = _read_corpus(request, events, Path(work))
        domain = _train_domain_model(sides["train"], config, events, Path(work)) if config["train_sentencepiece"] else None
    heldout = sides["heldout"].sample

    base = tok.load_proto(base_path)
    merged, added = tok.merge(base, domain, words)
    hf_tokenizer = tok.save_tokenizer(merged, out / "tokenizer")
    events.progress(2, 3)

    base_rate, _ = _tokens_per_char(spm.SentencePieceProcessor(model_file=str(base_path)), heldout)
    merged_sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer" / tok.SP_FILE))
    merged_rate, broken = _tokens_per_char(merged_sp, heldout)
    lines = [line for text in heldout for line in text.splitlines() if line.strip()]
    disagreeing = sum(hf_tokenizer(line, add_special_tokens=False)["input_ids"] != merged_sp.encode(line) for line in lines)
    events.progress(3, 3)
    metrics = {
        **cleaned,
        "base_vocab_size": len(base.pieces),
        "domain_vocab_size": len(domain.pieces) if domain else 0,
        "word_list_size": len(words),
        "merged_vocab_size": len(merged.pieces),
        "pieces_added": added,
        "heldout_documents": sides["heldout"].documents,
        "heldout_tokens_per_char_base": round(base_rate, 4),
        "heldout_tokens_per_char_merged": round(merged_rate, 4),
        "heldout_roundtrip_failures": broken,
        # Lines the Hugging Face tokenizer splits differently from the SentencePiece model.
        "heldout_hf_sp_mismatched_lines": disagreeing,
        "heldout_lines": len(lines),
    }
    return {"tokenizer": "tokenizer"}, metrics
