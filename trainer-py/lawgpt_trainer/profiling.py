"""The torch profiler around the optimizer steps that a stage config's `profiler` names, so that
where a step's time goes (matmuls, attention, the loss over a 50k vocabulary, ZeRO's communication,
the optimizer) is measured, not guessed.

Every rank writes its Chrome trace into the TensorBoard folder, which the orchestrator uploads
(TensorBoard's PyTorch profiler plugin and Perfetto read it): a slow rank shows beside the others.
Rank 0 also writes the operations that took the most time to OPERATIONS_FILE and names the first
few in its log. A window runs from a step's forward pass to the end of its optimizer update: the
Trainer fetches a step's batches before, and saves and scores a checkpoint after; a checkpoint step
inside a window of several steps is recorded with its save."""

import json
import time
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity
from transformers import TrainerCallback

from lawgpt_trainer import contract, distributed

PROFILER_DIR = Path(contract.schema()["tensorboard_dir"]) / "profiler"
OPERATIONS_FILE = "operations.json"
TOP_OPERATIONS = 30
LOGGED_OPERATIONS = 5


def _self_seconds(average, on_gpu: bool) -> float:
    """Time spent in the operation itself (not in what it called): on the GPU its kernels, else the CPU."""
    return (average.self_device_time_total if on_gpu else average.self_cpu_time_total) / 1e6


def summary(profiler, first_step: int, last_step: int, seconds: float) -> dict:
    """The recorded steps' wall time and their most expensive operations, each with its share of
    all operations' own time on the device that ran the step."""
    # Operators, not the kernels they launch: an operator's own device time is its kernels' time,
    # so counting the kernels as well would count it twice.
    averages = [a for a in profiler.key_averages() if a.device_type == DeviceType.CPU]
    # Without CUPTI the profiler records no kernels: the CPU's view is then the one there is.
    on_gpu = torch.cuda.is_available() and any(a.self_device_time_total > 0 for a in averages)
    averages = [a for a in averages if _self_seconds(a, on_gpu) > 0]
    total = sum(_self_seconds(a, on_gpu) for a in averages)
    ranked = sorted(averages, key=lambda a: _self_seconds(a, on_gpu), reverse=True)[:TOP_OPERATIONS]
    return {
        "first_step": first_step,
        "last_step": last_step,
        "seconds": seconds,
        "device": "cuda" if on_gpu else "cpu",
        # Against `seconds`, how much of the steps the device worked: far below it, the host
        # (Python, kernel launches, ZeRO-3's hooks) holds the device back.
        "busy_seconds": total,
        "operations": [{"name": a.key, "calls": a.count, "self_seconds": _self_seconds(a, on_gpu), "share": _self_seconds(a, on_gpu) / total} for a in ranked],
    }


class StepProfiler(TrainerCallback):
    def __init__(self, window: dict | None, output_dir: str, events):
        self.window, self.events = window, events
        self.folder = Path(output_dir) / PROFILER_DIR
        self.profiler = None
        self.first_step = 0
        self.started = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        if self.window and self.profiler is None and state.global_step + 1 == self.window["start_step"]:
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # the previous step's queued kernels are not this window's
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.start()
            self.first_step, self.started = state.global_step + 1, time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.profiler is not None and state.global_step >= self.window["start_step"] + self.window["steps"] - 1:
            self._finish(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        # Training stopped inside the window (a stop request): keep what was recorded.
        if self.profiler is not None:
            self._finish(state.global_step)
        elif self.window and state.global_step < self.window["start_step"]:
            # When `epochs` decides the length, which the config check cannot know, or on a stop request.
            self.events.log(f"profiler: this attempt ended at step {state.global_step}, before step {self.window['start_step']}", level="warning")

    def _finish(self, last_step: int) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # kernels still queued belong to the recorded steps
        seconds = time.perf_counter() - self.started
        profiler, self.profiler = self.profiler, None
        profiler.stop()
        self.folder.mkdir(parents=True, exist_ok=True)
        profiler.export_chrome_trace(str(self.folder / f"rank{distributed.rank()}.pt.trace.json.gz"))
        if not distributed.is_main():
            return
        found = summary(profiler, self.first_step, last_step, seconds)
        (self.folder / OPERATIONS_FILE).write_text(json.dumps(found, indent=2) + "\n", "utf-8")
        top = ", ".join(f"{o['name']} {o['share']:.0%}" for o in found["operations"][:LOGGED_OPERATIONS])
        self.events.log(f"profiled steps {self.first_step}-{last_step} ({seconds:.2f} s, {found['device']}): {top}; trace in {PROFILER_DIR}")
