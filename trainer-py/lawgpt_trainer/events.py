"""The JSON-lines event stream on stdout: the only thing the trainer writes there.

Libraries print to stdout freely (and C code writes to fd 1), so on open the real stdout is kept
for events and fd 1 is pointed at stderr: a stray print can never corrupt the protocol. Under
DeepSpeed only rank 0 speaks for the stage; the other ranks' events go to stderr, for debugging."""

import json
import math
import os
import sys
import threading

from lawgpt_trainer import contract, distributed


class EventStream:
    def __init__(self, out):
        self._out = out
        self._lock = threading.Lock()  # checkpoints are reported from a background thread

    @classmethod
    def take_stdout(cls) -> "EventStream":
        sys.stdout.flush()
        events_fd = os.dup(1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        if not distributed.is_main():
            os.close(events_fd)
            return cls(sys.stderr)
        return cls(os.fdopen(events_fd, "w", encoding="utf-8", buffering=1))

    def emit(self, event: str, **fields) -> None:
        document = {"event": event, **{k: v for k, v in fields.items() if v is not None}}
        broken = contract.problems("event", document)
        if broken:
            raise ValueError(f"event breaks the contract: {broken}")
        with self._lock:
            self._out.write(json.dumps(document, ensure_ascii=False) + "\n")

    def progress(self, step: int, total_steps: int, loss: float | None = None, learning_rate: float | None = None):
        finite = lambda x: x if x is not None and math.isfinite(x) else None  # noqa: E731
        self.emit("progress", step=step, total_steps=total_steps, loss=finite(loss), learning_rate=finite(learning_rate))

    def log(self, message: str, level: str = "info") -> None:
        self.emit("log", level=level, message=message)
