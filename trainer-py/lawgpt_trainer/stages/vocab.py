"""vocab: train SentencePiece on the legal corpus and merge its new pieces into the base tokenizer
(the Chinese-LLaMA merge), then measure the merged tokenizer on held-out documents."""

import tempfile
from pathlib import Path

import sentencepiece as spm

from lawgpt_trainer import cleaning, data
from lawgpt_trainer import tokenizer as tok
from lawgpt_trainer.errors import InvalidInput


def _training_text(docs: list[data.Document], path: Path, max_sentence_length: int) -> int:
    lines = [line.strip() for d in docs for line in d.text.splitlines() if line.strip()]
    path.write_text("\n".join(line[:max_sentence_length] for line in lines), "utf-8")
    return len(lines)


def _tokens_per_char(sp: spm.SentencePieceProcessor, docs: list[data.Document]) -> tuple[float, int]:
    tokens = chars = broken = 0
    for d in docs:
        ids = sp.encode(d.text)
        tokens += len(ids)
        chars += len(d.text)
        broken += sp.decode(ids) != d.text
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
    words = []
    for number, line in enumerate(Path(path).read_text("utf-8-sig").splitlines(), start=1):
        word = line.strip()
        if any(ch.isspace() for ch in word):
            raise InvalidInput(f"{Path(path).name}:{number}: a word list entry may not contain spaces: {word!r}")
        if word:
            words.append(word)
    return words


def _train_domain_model(train_docs: list[data.Document], config: dict, events):
    with tempfile.TemporaryDirectory() as work:
        text = Path(work) / "corpus.txt"
        if _training_text(train_docs, text, config["max_sentence_length"]) == 0:
            raise InvalidInput("the corpus has no text to train a vocabulary on")
        spm.set_random_generator_seed(0)
        try:
            _train_sentencepiece(text, f"{work}/domain", config)
        except RuntimeError as e:
            # SentencePiece reports a vocab_size too small for the corpus's characters this way.
            if "vocab_size" in str(e):
                raise InvalidInput(f"vocab.vocab_size={config['vocab_size']} does not fit this corpus: {e}") from e
            raise
        events.progress(1, 3)
        return tok.load_proto(f"{work}/domain.model")


def run(request: dict, events) -> tuple[dict, dict]:
    config, out = request["config"], Path(request["output_dir"])
    docs, cleaned = cleaning.read_corpus(request, events)
    train_docs, heldout = data.split_documents(docs, request["split"]["heldout_percent"])
    base_path = Path(request["inputs"]["base_tokenizer"]) / tok.SP_FILE

    words = _read_words(request["inputs"]["words"]) if "words" in request["inputs"] else []
    domain = _train_domain_model(train_docs, config, events) if config["train_sentencepiece"] else None
    if domain is None and not words:
        raise InvalidInput("vocab.train_sentencepiece is false and no word list was given: nothing to merge")

    base = tok.load_proto(base_path)
    merged, added = tok.merge(base, domain, words)
    hf_tokenizer = tok.save_tokenizer(merged, out / "tokenizer")
    events.progress(2, 3)

    base_rate, _ = _tokens_per_char(spm.SentencePieceProcessor(model_file=str(base_path)), heldout)
    merged_sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer" / tok.SP_FILE))
    merged_rate, broken = _tokens_per_char(merged_sp, heldout)
    lines = [line for d in heldout for line in d.text.splitlines() if line.strip()]
    disagreeing = sum(hf_tokenizer(line, add_special_tokens=False)["input_ids"] != merged_sp.encode(line) for line in lines)
    events.progress(3, 3)
    metrics = {
        **cleaned,
        "base_vocab_size": len(base.pieces),
        "domain_vocab_size": len(domain.pieces) if domain else 0,
        "word_list_size": len(words),
        "merged_vocab_size": len(merged.pieces),
        "pieces_added": added,
        "heldout_documents": len(heldout),
        "heldout_tokens_per_char_base": round(base_rate, 4),
        "heldout_tokens_per_char_merged": round(merged_rate, 4),
        "heldout_roundtrip_failures": broken,
        # Lines the Hugging Face tokenizer splits differently from the SentencePiece model.
        "heldout_hf_sp_mismatched_lines": disagreeing,
        "heldout_lines": len(lines),
    }
    return {"tokenizer": "tokenizer"}, metrics
