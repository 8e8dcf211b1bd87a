"""What one training process knows about its peers when the DeepSpeed launcher runs several
(it sets RANK and WORLD_SIZE): who speaks for the run, and how they agree before acting."""

import os

import torch
import torch.distributed as dist


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Rank 0 alone reports events, writes manifests and the stage's outputs."""
    return rank() == 0


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if _active():
        dist.barrier()


def any_rank(flag: bool, device) -> bool:
    """True on every rank if it is true on one: ranks that stop at different steps deadlock in the
    next collective, so a stop request is acted on only once all ranks know of it."""
    if not _active():
        return flag
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def shutdown() -> None:
    """Ends the process group once a stage has ended in order, as PyTorch asks. Left to interpreter
    exit, the backend's threads are torn down in no set order: a rank of a completed ZeRO-3 stage
    on CPU once aborted there ("terminate called without an active exception", exit code 250),
    failing a stage whose work was done."""
    if _active():
        dist.destroy_process_group()
