"""Growing a model's vocabulary to the merged tokenizer without throwing away what it knows.

A new piece's embedding starts as the mean of the embeddings of the base pieces that spell the
same text (its input and output rows alike), the way vocabulary-expansion recipes initialise new
tokens; rows added only to reach a tensor-core friendly size are never generated."""

import sentencepiece as spm
import torch

PAD_VOCAB_TO_MULTIPLE_OF = 64
SPACE = "\u2581"  # SentencePiece's word-boundary mark


def base_spelling(base: spm.SentencePieceProcessor, piece: str) -> list[int]:
    """Base ids that spell `piece`; SentencePiece adds a word-boundary mark in front of a text,
    which a piece without one must not inherit."""
    ids = base.encode(piece.replace(SPACE, " "))
    if not piece.startswith(SPACE) and ids and base.id_to_piece(ids[0]) == SPACE:
        ids = ids[1:]
    return ids


@torch.no_grad()
def resize_from_base(model, tokenizer, base: spm.SentencePieceProcessor) -> dict:
    old_rows = model.get_input_embeddings().weight.shape[0]
    vocab = len(tokenizer)
    model.resize_token_embeddings(vocab, pad_to_multiple_of=PAD_VOCAB_TO_MULTIPLE_OF, mean_resizing=False)
    rows = model.get_input_embeddings().weight.shape[0]
    matrices = [model.get_input_embeddings().weight, model.get_output_embeddings().weight]
    for new_id in range(old_rows, vocab):
        spelling = base_spelling(base, tokenizer.convert_ids_to_tokens(new_id)) or [base.unk_id()]
        for weight in matrices:
            weight[new_id] = weight[spelling].mean(dim=0)
    for weight in matrices:
        weight[vocab:] = weight[:old_rows].mean(dim=0)
    model.generation_config.suppress_tokens = list(range(vocab, rows)) or None
    return {"base_vocab_size": old_rows, "embedding_rows": rows}
