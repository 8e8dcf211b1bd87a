"""The compile cache: what torch.compile made of the decoder layers (inductor's compiled graphs,
and on a GPU their Triton kernels), kept by the orchestrator in S3 and handed to the next attempt
or run of the same stage config, so that a fresh worker's compiled launch starts warm instead of
compiling for 10-14 s of its first step (a 1.1B on an H200).

torch packs and unpacks it (torch.compiler.save_cache_artifacts / load_cache_artifacts); each
entry keeps torch's own key, checked against the graph being compiled, so an entry that does not
fit is a cache miss, never a wrong kernel. A process's second save holds its first one's entries
too, but torch 2.15 loads from it only those recorded since the first (it keeps one batch per kind
of entry); so the cache is a folder of parts that a worker loads all of, `<kind>.<digest>.bin`,
kind being the torch build and device (`device_kind()`): workers of different kinds share the
folder without taking each other's parts, and a part is never replaced. Rank 0 offers a part with
a `compile_cache` event after the first step (training's graphs), after an evaluation and at the
end of training, whenever it compiled graphs that no part it loaded or offered held (evaluation's,
or a new shape's). The cache only saves time: a part that cannot be read or written is a warning,
and the layers compile cold."""

import hashlib
import platform
import re
from pathlib import Path

import torch
from torch._dynamo.utils import counters
from transformers import TrainerCallback

from lawgpt_trainer import distributed

OFFERED_DIR = "compile_cache"


def device_kind(device: torch.device) -> str:
    """What the parts of a process training on `device` are named for: its torch build and the
    kind of device, whose compiled kernels differ (the GPU's architecture, or the CPU's)."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        name = f"{torch.cuda.get_device_name(device)}-sm{major}{minor}"
    else:
        name = f"cpu-{platform.machine()}"
    return re.sub(r"[^A-Za-z0-9._+-]", "-", f"torch-{torch.__version__}-{name}")


def load(folder: str | None, kind: str, events) -> frozenset[str]:
    """Loads the parts of this kind from the `compile_cache` input into torch's caches, before any
    layer compiles; returns their entries' keys (none when the folder has no part of this kind)."""
    if not folder:
        return frozenset()
    parts = sorted(p for p in Path(folder).iterdir() if p.name.startswith(f"{kind}.") and p.suffix == ".bin")
    if not parts:
        events.log(f"compile cache: nothing for {kind} yet, compiling cold")
        return frozenset()
    keys, loaded = frozenset(), 0
    for part in parts:
        try:
            info = torch.compiler.load_cache_artifacts(part.read_bytes())
            problem = None if info is not None else "torch could not read it"
        except Exception as e:  # noqa: BLE001 - a cache only saves time
            info, problem = None, f"{type(e).__name__}: {e}"
        if problem:
            events.log(f"compile cache: part {part.name} left out ({problem})", level="warning")
            continue
        keys, loaded = keys | _keys(info), loaded + 1
    events.log(f"compile cache: {len(keys)} entries in {loaded} parts loaded for {kind}")
    return keys


def hits() -> dict:
    """Compiled graphs found in inductor's cache (loaded, or left on disk by an earlier attempt on
    this worker) and compiled afresh; with a warm cache the misses are 0."""
    return {"compile_cache_hits": counters["inductor"]["fxgraph_cache_hit"], "compile_cache_misses": counters["inductor"]["fxgraph_cache_miss"]}


def _keys(info) -> frozenset[str]:
    return frozenset(key for keys in info.artifacts.values() for key in keys) if info else frozenset()


class CompileCacheOffer(TrainerCallback):
    """Rank 0 writes what this process compiled to `<output_dir>/compile_cache/<kind>.<digest>.bin`
    and reports it, when that holds entries that no part loaded or offered did: after the first
    step, after an evaluation (also the one pretrain scores after training) and at the end of
    training."""

    def __init__(self, output_dir: str, kind: str, loaded: frozenset[str], events):
        self.output_dir, self.kind, self.known, self.events = Path(output_dir), kind, loaded, events
        self.stepped = False

    def on_step_end(self, args, state, control, **kwargs):
        if not self.stepped:
            self.stepped = True
            self._offer()

    def on_evaluate(self, args, state, control, **kwargs):
        self._offer()

    def on_train_end(self, args, state, control, **kwargs):
        self._offer()

    def _offer(self) -> None:
        if not distributed.is_main():
            return
        try:
            saved = torch.compiler.save_cache_artifacts()
            if saved is None or _keys(saved[1]) <= self.known:
                return
            relative = Path(OFFERED_DIR) / f"{self.kind}.{hashlib.sha256(saved[0]).hexdigest()[:16]}.bin"
            path = self.output_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(saved[0])
        except Exception as e:  # noqa: BLE001 - a cache only saves time
            self.events.log(f"compile cache: could not offer what was compiled ({type(e).__name__}: {e})", level="warning")
            return
        self.known |= _keys(saved[1])
        self.events.emit("compile_cache", path=str(relative))
