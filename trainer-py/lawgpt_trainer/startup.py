"""Where a training stage's seconds up to its first loss go: one figure for a launch that takes
most of a minute on a GPU machine says nothing about what to make faster. A phase ends at its mark
and began at the mark before it; the first began when the process did.

The phases, as the stages mark them: `imports` (Python, torch and the stage's libraries; with
--wait-for-request also the wait for the orchestrator's downloads), `data` (tokenizer, blocks or
samples), `model` (the process group, the base model's load, resize and LoRA), `engine` (the
Trainer, DeepSpeed's engine and optimizer, a resumed checkpoint's state), `first_step` (the first
optimizer step itself, with the GPU's warm-up)."""

import os
import time

_marks: list[tuple[str, float]] = []


def _now() -> float:
    # The clock /proc counts a process's start time on.
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _process_start() -> float:
    with open("/proc/self/stat") as f:
        after_name = f.read().rsplit(")", 1)[1].split()
    return int(after_name[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime, in clock ticks


def mark(phase: str) -> None:
    """Ends `phase` now."""
    _marks.append((phase, _now()))


def metrics() -> dict:
    """`startup_<phase>_seconds` for every phase marked, and once the first step has ended,
    `seconds_to_first_step`: their sum."""
    start = previous = _process_start()
    found: dict[str, float] = {}
    for phase, at in _marks:
        found[f"startup_{phase}_seconds"] = at - previous
        previous = at
        if phase == "first_step":
            found["seconds_to_first_step"] = at - start
    return found
