"""The training loss: next-token cross-entropy, the same value and gradients as transformers' own
causal-LM loss, computed over the logits in chunks of tokens.

With a 50k vocabulary the logits are the largest activation: 8 x 1,024 tokens make 409M of them,
0.8 GB in fp16. transformers upcasts them all to fp32, keeps their log-softmax for the backward
pass and makes two more full fp32 tensors there: 4.9 GB. Here a chunk of tokens is upcast at a
time. The forward pass keeps only each token's log-normaliser (logsumexp); the backward pass
rebuilds each chunk's softmax from it and writes the chunk's gradient, (softmax - one-hot of the
target) x the loss's gradient, straight into one gradient in the logits' dtype. What is kept is
the fp16 logits, their fp16 gradient and one chunk's fp32 work (P8 in bench/README.md).

The Trainer takes it as `compute_loss_func`, so the model still computes its logits in its own
forward pass: DeepSpeed's ZeRO-3 hooks gather the LM head there as for every other module."""
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from lawgpt_trainer.prompt import IGNORE_INDEX

CHUNK_TOKENS = 1024  # fp32 logits of 1,024 tokens over a 50k vocabulary: 200 MB at a time


class _SummedCrossEntropy(torch.autograd.Function):
    """Sum over rows of -log softmax(logits)[target], rows whose target is IGNORE_INDEX left out."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, chunk_tokens: int) -> torch.Tensor:
        # Half precision is scored in fp32; fp64 stays fp64, which lets gradcheck test the backward.
        working = torch.promote_types(logits.dtype, torch.float32)
        scored = targets != IGNORE_INDEX
        safe_targets = targets.masked_fill(~scored, 0)
        log_normalisers = torch.empty(logits.shape[0], dtype=working, device=logits.device)
        total = torch.zeros((), dtype=working, device=logits.device)
        for start in range(0, logits.shape[0], chunk_tokens):
            rows = slice(start, start + chunk_tokens)
            chunk = logits[rows].to(working)
            log_normalisers[rows] = torch.logsumexp(chunk, dim=-1)
            target_logits = chunk.gather(1, safe_targets[rows, None]).squeeze(1)
            total += torch.where(scored[rows], log_normalisers[rows] - target_logits, 0.0).sum()
        ctx.save_for_backward(logits, safe_targets, scored, log_normalisers)
        ctx.chunk_tokens = chunk_tokens
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_total: torch.Tensor):
        logits, safe_targets, scored, log_normalisers = ctx.saved_tensors
        grad = torch.empty_like(logits)
        for start in range(0, logits.shape[0], ctx.chunk_tokens):
            rows = slice(start, start + ctx.chunk_tokens)
            softmax = logits[rows].to(log_normalisers.dtype, copy=True).sub_(log_normalisers[rows, None]).exp_()
            softmax[torch.arange(softmax.shape[0], device=softmax.device), safe_targets[rows]] -= 1
            grad[rows] = softmax.mul_(grad_total).masked_fill_(~scored[rows, None], 0.0)
        return grad, None, None


def causal_lm_loss(outputs, labels: torch.Tensor, num_items_in_batch=None, chunk_tokens: int = CHUNK_TOKENS) -> torch.Tensor:
    """Mean cross-entropy of each token's prediction of the next one: over `num_items_in_batch`
    targets when the Trainer counts them across gradient accumulation (and processes), else over
    this batch's targets, as transformers' ForCausalLMLoss does."""
    logits = outputs.logits
    targets = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].reshape(-1).to(logits.device)
    total = _SummedCrossEntropy.apply(logits.reshape(-1, logits.shape[-1]), targets, chunk_tokens)
    if num_items_in_batch is None:
        return total / (targets != IGNORE_INDEX).sum()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch
