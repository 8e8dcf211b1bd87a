"""Growing a model's vocabulary to the merged tokenizer without throwing away what it knows.

A new piece's embedding starts as the mean of the embeddings of the base pieces that spell the
same text (its input and output rows alike), the way vocabulary-expansion recipes initialise new
tokens; rows added only to reach a tensor-core friendly size are never generated."""

import contextlib
import itertools
import math

import sentencepiece as spm
import torch

PAD_VOCAB_TO_MULTIPLE_OF = 64
SPACE = "\u2581"  # SentencePiece's word-boundary mark


def padded_rows(vocab: int) -> int:
    """Embedding rows for a vocabulary of `vocab` pieces, as resize_from_base makes them."""
    return math.ceil(vocab / PAD_VOCAB_TO_MULTIPLE_OF) * PAD_VOCAB_TO_MULTIPLE_OF


def base_spelling(base: spm.SentencePieceProcessor, piece: str) -> list[int]:
    """Base ids that spell `piece`; SentencePiece adds a word-boundary mark in front of a text,
    which a piece without one must not inherit."""
    ids = base.encode(piece.replace(SPACE, " "))
    if not piece.startswith(SPACE) and ids and base.id_to_piece(ids[0]) == SPACE:
        ids = ids[1:]
    return ids


def _whole(weights: list[torch.nn.Parameter]):
    """The weights whole for the duration, also where ZeRO-3 keeps only a shard on each rank;
    what rank 0 writes into them is what every rank keeps."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(weights, modifier_rank=0)


@torch.no_grad()
def resize_from_base(model, tokenizer, base: spm.SentencePieceProcessor) -> dict:
    # The config, not the weights' shapes: a ZeRO-3 shard has no shape of the whole.
    old_rows = model.config.vocab_size
    vocab = len(tokenizer)
    model.resize_token_embeddings(vocab, pad_to_multiple_of=PAD_VOCAB_TO_MULTIPLE_OF, mean_resizing=False)
    rows = model.config.vocab_size
    matrices = [model.get_input_embeddings().weight, model.get_output_embeddings().weight]
    spellings = [base_spelling(base, piece) or [base.unk_id()] for piece in tokenizer.convert_ids_to_tokens(range(old_rows, vocab))]
    with _whole(matrices):
        for weight in matrices:
            if spellings:
                # One bag of base rows per new piece, all averaged in one operation: row by row,
                # the 18,516 new pieces of the bench's merged vocabulary took 111,000 small ones,
                # each a kernel launch on a GPU (3.4 s of a 2,048-wide model's load on a CPU).
                ids = torch.tensor([i for spelling in spellings for i in spelling], device=weight.device)
                offsets = torch.tensor([0, *itertools.accumulate(map(len, spellings[:-1]))], device=weight.device)
                weight[old_rows:vocab] = torch.nn.functional.embedding_bag(ids, weight[:old_rows], offsets, mode="mean")
            weight[vocab:] = weight[:old_rows].mean(dim=0)
    model.generation_config.suppress_tokens = list(range(vocab, rows)) or None
    return {"base_vocab_size": old_rows, "embedding_rows": rows}
