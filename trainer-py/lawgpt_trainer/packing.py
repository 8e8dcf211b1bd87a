"""Turning documents into fixed-length token blocks for causal language modelling."""

import torch

from lawgpt_trainer.data import Document


def pack(tokenizer, docs: list[Document], block_size: int) -> list[torch.Tensor]:
    """Concatenates every document (each ended by EOS) and cuts the stream into full blocks; the
    remainder shorter than a block is dropped, as in Chinese-LLaMA's group_texts."""
    stream: list[int] = []
    for doc in docs:
        stream.extend(tokenizer(doc.text, add_special_tokens=False)["input_ids"])
        stream.append(tokenizer.eos_token_id)
    usable = len(stream) - len(stream) % block_size
    return [torch.tensor(stream[i : i + block_size]) for i in range(0, usable, block_size)]


def lm_dataset(blocks: list[torch.Tensor]) -> list[dict]:
    """Loss on every token: labels are the inputs (the model shifts them)."""
    return [{"input_ids": b, "labels": b.clone(), "attention_mask": torch.ones_like(b)} for b in blocks]
