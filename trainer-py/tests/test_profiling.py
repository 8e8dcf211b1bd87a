"""The profiler records exactly the configured optimizer steps, and keeps what it recorded when
training stops inside them; the startup phases add up to the seconds before the first step."""

import json
import time
from types import SimpleNamespace

import pytest
import torch

from lawgpt_trainer import profiling, startup


class Logged:
    def __init__(self):
        self.messages: list[str] = []

    def log(self, message: str, level: str = "info") -> None:
        self.messages.append(message)


def _step(callback: profiling.StepProfiler, completed: int) -> None:
    """One optimizer step as the Trainer drives its callbacks: `completed` steps done before it."""
    callback.on_step_begin(None, SimpleNamespace(global_step=completed), None)
    torch.randn(64, 64) @ torch.randn(64, 64)
    callback.on_step_end(None, SimpleNamespace(global_step=completed + 1), None)


def test_only_the_window_is_recorded(tmp_path):
    events = Logged()
    callback = profiling.StepProfiler({"start_step": 2, "steps": 2}, str(tmp_path), events)
    _step(callback, 0)
    assert callback.profiler is None
    _step(callback, 1)
    assert callback.profiler is not None
    _step(callback, 2)
    assert callback.profiler is None
    _step(callback, 3)
    callback.on_train_end(None, SimpleNamespace(global_step=4), None)
    found = json.loads((tmp_path / profiling.PROFILER_DIR / profiling.OPERATIONS_FILE).read_text("utf-8"))
    assert (found["first_step"], found["last_step"]) == (2, 3)
    assert any(o["name"] == "aten::mm" for o in found["operations"])
    # The device's time in all operations: at least that of the ones listed, within the steps.
    assert 0 < found["busy_seconds"] <= found["seconds"]
    assert sum(o["self_seconds"] for o in found["operations"]) <= found["busy_seconds"] + 1e-9
    assert [m.split(" (")[0] for m in events.messages] == ["profiled steps 2-3"]


def test_a_stop_inside_the_window_keeps_what_was_recorded(tmp_path):
    events = Logged()
    callback = profiling.StepProfiler({"start_step": 1, "steps": 5}, str(tmp_path), events)
    _step(callback, 0)
    callback.on_train_end(None, SimpleNamespace(global_step=1), None)
    assert (tmp_path / profiling.PROFILER_DIR / "rank0.pt.trace.json.gz").is_file()
    assert json.loads((tmp_path / profiling.PROFILER_DIR / profiling.OPERATIONS_FILE).read_text("utf-8"))["last_step"] == 1


def test_a_window_past_the_end_of_training_is_reported(tmp_path):
    events = Logged()
    callback = profiling.StepProfiler({"start_step": 3, "steps": 1}, str(tmp_path), events)
    _step(callback, 0)
    callback.on_train_end(None, SimpleNamespace(global_step=1), None)
    assert events.messages == ["profiler: this attempt ended at step 1, before step 3"]
    assert not (tmp_path / profiling.PROFILER_DIR).exists()


def test_no_window_records_nothing(tmp_path):
    callback = profiling.StepProfiler(None, str(tmp_path), Logged())
    _step(callback, 0)
    callback.on_train_end(None, SimpleNamespace(global_step=1), None)
    assert not (tmp_path / profiling.PROFILER_DIR).exists()


def test_startup_phases_add_up_to_the_seconds_before_the_first_step(monkeypatch):
    monkeypatch.setattr(startup, "_marks", [])
    for phase in ("imports", "data", "model", "engine", "first_step"):
        time.sleep(0.01)
        startup.mark(phase)
    found = startup.metrics()
    phases = [found[f"startup_{p}_seconds"] for p in ("imports", "data", "model", "engine", "first_step")]
    assert all(seconds >= 0.009 for seconds in phases[1:])
    # This test process started well before it ran; its imports phase covers that.
    assert phases[0] > 0.1
    assert found["seconds_to_first_step"] == pytest.approx(sum(phases))
