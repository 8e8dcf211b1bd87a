"""What one training process knows about its peers when the DeepSpeed launcher runs several
(it sets RANK and WORLD_SIZE): who speaks for the run, and how they agree before acting."""

import os
import sys
from pathlib import Path

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


def gathered(value) -> list:
    """Every rank's `value`, in rank order (picklable values)."""
    if not _active():
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def _deepspeed_shm_segment() -> Path:
    """The shared-memory segment DeepSpeed's CPU backend (the cpu profile) gives this rank when
    every rank is on one host (named by user, master address and port, and rank, in its shm.cpp)."""
    name = f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR', '')}_{os.environ.get('MASTER_PORT', '')}_{rank()}"
    return Path("/dev/shm") / name


def release_deepspeed_shm() -> None:
    """Removes this rank's DeepSpeed shared-memory segment from /dev/shm as soon as every rank has
    mapped it: DeepSpeed never does, so each cpu-profile run left 69 MB per rank behind until
    /dev/shm (host memory) filled and a later rank crashed creating its own, and a later run on
    the same port could open a stale one. The memory itself lives until the ranks exit, however
    they end. Every rank has mapped every other's once it is past DeepSpeed's init: hence the barrier."""
    barrier()
    _deepspeed_shm_segment().unlink(missing_ok=True)


def shutdown() -> None:
    """Ends the process group once a stage has ended in order, as PyTorch asks."""
    if _active():
        dist.destroy_process_group()


def launched() -> bool:
    """Started by the DeepSpeed launcher, as one of a run's ranks."""
    return "WORLD_SIZE" in os.environ


def exit_rank(code: int) -> None:
    """Ends a rank with its stage's exit code, without the interpreter's teardown. DeepSpeed keeps
    its process groups referenced past destroy_process_group, so gloo's threads still run at exit
    (six pt_gloo_runloop and two gloo_tcp_loop on a cpu-profile rank). Torn down in no set order,
    they aborted a rank of a completed ZeRO-3 stage in two test runs ("terminate called without an
    active exception", exit code 250), failing a stage whose work was done. What a stage hands over
    is written and closed by now, and its events are line-buffered."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
