"""The trained model of a ZeRO-3 run, written a shard at a time. The Trainer's own save gathers the
whole 16-bit model into rank 0's host memory before writing it: 13.8 GB for a 7B, on top of the
process itself, which would put rank 0 over its share of a node. Here every rank gathers one
module's weights at a time (as DeepSpeed's own consolidation does), rank 0 copies them into the
shard it is filling and writes each shard once it holds SHARD_BYTES, in Hugging Face's sharded
layout, which from_pretrained reads as it reads the Trainer's."""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from lawgpt_trainer import distributed
from lawgpt_trainer.artifacts import SHARD_INDEX, WEIGHTS

# The most of a model any save holds in host memory at once, here and in save_pretrained (merge.py),
# which copies a shard's tensors off the GPU before writing any of them: its default shard, 50 GB,
# would be a whole 7B.
SHARD_BYTES = 2**30


def _tensors_by_module(model):
    """(a module's name, its own parameters not seen before, its persistent buffers) in the order
    state_dict keeps; a tied parameter is written once, under its first name, as save_pretrained does."""
    seen = set()
    for prefix, module in model.named_modules():
        parameters = [(name, p) for name, p in module.named_parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for _, p in parameters)
        buffers = [(name, b) for name, b in module.named_buffers(recurse=False) if name not in module._non_persistent_buffers_set]
        if parameters or buffers:
            yield prefix, parameters, buffers


def _shard_name(index: int, count: int) -> str:
    return WEIGHTS[0] if count == 1 else f"model-{index:05d}-of-{count:05d}.safetensors"


@torch.no_grad()
def save(model, out: Path, shard_bytes: int = SHARD_BYTES) -> None:
    """Writes `model` (partitioned by ZeRO-3) and its config to `out`, collectively: every rank
    calls it."""
    import deepspeed

    main = distributed.is_main()
    written, shard, held, total = [], {}, 0, 0

    def write() -> None:
        nonlocal shard, held, total
        # Named in order as written; renamed to n-of-count once the count is known.
        path = out / f"partial-{len(written):05d}.safetensors"
        save_file(shard, str(path), metadata={"format": "pt"})
        written.append((path, list(shard)))
        shard, held, total = {}, 0, total + held

    if main:
        out.mkdir(parents=True, exist_ok=True)
    for prefix, parameters, buffers in _tensors_by_module(model):
        with deepspeed.zero.GatheredParameters([p for _, p in parameters]):
            if main:
                for name, tensor in parameters + buffers:
                    shard[f"{prefix}.{name}" if prefix else name] = tensor.detach().to("cpu", copy=True).contiguous()
                    held += tensor.numel() * tensor.element_size()
        if main and held >= shard_bytes:
            write()
    if not main:
        return
    if shard:
        write()
    weight_map = {}
    for i, (path, keys) in enumerate(written, start=1):
        name = _shard_name(i, len(written))
        path.rename(out / name)
        weight_map.update(dict.fromkeys(keys, name))
    if len(written) > 1:
        (out / SHARD_INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    # As save_pretrained records it: what a later stage loads a LoRA base in (training.stored_dtype).
    model.config.dtype = str(next(t.dtype for t in model.parameters() if t.is_floating_point())).removeprefix("torch.")
    model.config.save_pretrained(out)
    if model.can_generate() and model.generation_config is not None:
        model.generation_config.save_pretrained(out)
