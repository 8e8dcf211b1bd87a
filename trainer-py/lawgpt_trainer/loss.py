"""The training loss: next-token cross-entropy, the same value as transformers' own causal-LM loss,
computed over the logits in chunks of tokens.

With a 50k vocabulary the logits are the largest activation: 8 x 1,024 tokens make 409M of them.
transformers upcasts them all to fp32 and keeps the log-softmax of all of them for the backward
pass, and the backward pass makes two more full fp32 tensors: 4.9 GB beyond the 0.8 GB of fp16
logits (P8 in bench/README.md). Here each chunk is upcast, scored and dropped, and recomputed
chunk by chunk in the backward pass (activation checkpointing), so fp32 copies exist for one chunk
at a time. The cost is one more softmax over the logits, which is little beside the matrix
products that make them.

The Trainer takes it as `compute_loss_func`, so the model still computes its logits in its own
forward pass: DeepSpeed's ZeRO-3 hooks gather the LM head there as for every other module."""
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from lawgpt_trainer.prompt import IGNORE_INDEX

CHUNK_TOKENS = 1024  # fp32 logits of 1,024 tokens over a 50k vocabulary: 200 MB at a time


def _summed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")


def causal_lm_loss(outputs, labels: torch.Tensor, num_items_in_batch=None, chunk_tokens: int = CHUNK_TOKENS) -> torch.Tensor:
    """Mean cross-entropy of each token's prediction of the next one: over `num_items_in_batch`
    targets when the Trainer counts them across gradient accumulation (and processes), else over
    this batch's targets, as transformers' ForCausalLMLoss does."""
    logits = outputs.logits
    targets = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].reshape(-1).to(logits.device)
    flat = logits.reshape(-1, logits.shape[-1])
    total = sum(
        checkpoint(_summed_cross_entropy, chunk, chunk_targets, use_reentrant=False)
        for chunk, chunk_targets in zip(flat.split(chunk_tokens), targets.split(chunk_tokens))
    )
    if num_items_in_batch is None:
        return total / (targets != IGNORE_INDEX).sum()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch
