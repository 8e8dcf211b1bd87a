"""SentencePiece models and their Hugging Face twins: the Chinese-LLaMA merge lives here."""

import shutil
from importlib import resources
from pathlib import Path

from sentencepiece import sentencepiece_model_pb2 as sp_pb

SP_FILE = "tokenizer.model"
PACKAGED_BASE = {"mistral_common:tokenizer.model.v1": ("mistral_common", "data/tokenizer.model.v1")}


def load_proto(path: str | Path) -> sp_pb.ModelProto:
    proto = sp_pb.ModelProto()
    proto.ParseFromString(Path(path).read_bytes())
    return proto


def merge(base: sp_pb.ModelProto, domain: sp_pb.ModelProto | None, words: list[str] = ()) -> tuple[sp_pb.ModelProto, int]:
    """Appends the domain model's normal pieces that the base lacks, then the words of a domain
    word list (LaWGPT's way), after every base piece: base ids stay what they were, so the base
    model's embeddings keep their meaning.

    Chinese-LLaMA gave every appended piece score 0, above every base merge. Here they stay above
    every base merge but keep the domain model's order, in (-1, 0]: with thousands of pieces tied
    at 0, SentencePiece breaks the ties in its own way, which no merge list can reproduce."""
    known = {p.piece for p in base.pieces}
    new = []
    trained = [p.piece for p in domain.pieces if p.type == sp_pb.ModelProto.SentencePiece.NORMAL] if domain else []
    for piece in [*trained, *words]:
        if piece not in known:
            new.append(piece)
            known.add(piece)
    merged = sp_pb.ModelProto()
    merged.CopyFrom(base)
    for rank, piece in enumerate(new):
        merged.pieces.add(piece=piece, score=-rank / (len(new) + 1), type=sp_pb.ModelProto.SentencePiece.NORMAL)
    return merged, len(new)


def save_tokenizer(proto: sp_pb.ModelProto, out_dir: Path):
    """Writes the SentencePiece model and the Hugging Face tokenizer built from it into one folder.

    SentencePiece's BPE applies the merge whose result scores highest; Hugging Face's converter
    ranks merges by the resulting piece's id instead, which is the same order only while ids
    follow scores. After a merge they do not (a new piece outranks older base pieces), so the
    merges are ranked by score here, and the two tokenizers split every text the same way."""
    from transformers import LlamaTokenizer
    from transformers.tokenization_utils_base import generate_merges

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SP_FILE).write_bytes(proto.SerializeToString())
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    merges = generate_merges(vocab, {p.piece: p.score for p in proto.pieces})
    hf = LlamaTokenizer(vocab=vocab, merges=merges)
    hf.save_pretrained(str(out_dir))
    return hf


def copy_packaged_base(name: str, out_dir: Path) -> sp_pb.ModelProto:
    package, relative = PACKAGED_BASE[name]
    out_dir.mkdir(parents=True, exist_ok=True)
    with resources.as_file(resources.files(package).joinpath(relative)) as source:
        shutil.copyfile(source, out_dir / SP_FILE)
    return load_proto(out_dir / SP_FILE)


def save_with_model(hf_tokenizer, source_dir: str | Path, model_dir: Path) -> None:
    """A model folder carries its tokenizer in both forms: Hugging Face's files for loading with
    the model, and the SentencePiece model (when the source has one) for tools that read LLaMA
    tokenizers directly."""
    hf_tokenizer.save_pretrained(str(model_dir))
    if (Path(source_dir) / SP_FILE).is_file():
        shutil.copyfile(Path(source_dir) / SP_FILE, model_dir / SP_FILE)
