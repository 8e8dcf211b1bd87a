"""Turning documents into fixed-length token blocks for causal language modelling, and keeping
them in one file so that the block cache can hand them to a later attempt."""

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

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


BLOCKS_FILE = "blocks.safetensors"


def save(folder: Path, train: list[torch.Tensor], heldout: list[torch.Tensor], block_size: int, report: dict) -> None:
    """One file, so that a copy of it is either whole or absent; `report` is the corpus cleaning's."""
    folder.mkdir(parents=True, exist_ok=True)
    stack = lambda blocks: torch.stack(blocks).to(torch.int32) if blocks else torch.zeros((0, block_size), dtype=torch.int32)  # noqa: E731
    save_file({"train": stack(train), "heldout": stack(heldout)}, str(folder / BLOCKS_FILE), metadata={"block_size": str(block_size), "report": json.dumps(report)})


def load(folder: Path, block_size: int) -> tuple[list[torch.Tensor], list[torch.Tensor], dict]:
    with safe_open(str(folder / BLOCKS_FILE), framework="pt") as f:
        metadata = f.metadata()
        if int(metadata["block_size"]) != block_size:
            raise RuntimeError(f"cached blocks are {metadata['block_size']} tokens long, the config says {block_size}")
        train, heldout = (list(f.get_tensor(name).long()) for name in ("train", "heldout"))
    return train, heldout, json.loads(metadata["report"])
