"""`python -m lawgpt_trainer <stage> --request <request.json>`: runs one stage and reports on stdout."""

import argparse
import ctypes
import importlib
import os
import select
import signal
import sys
import threading
import traceback

from lawgpt_trainer import contract, running_version
from lawgpt_trainer.errors import Interrupted, InvalidInput
from lawgpt_trainer.events import EventStream

STAGES = tuple(contract.schema()["stage_io"])


def _die_with_parent() -> None:
    # If the worker that launched us dies, so do we, at once (nobody is left to upload a final
    # checkpoint): no orphan trainer holding GPUs.
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _die_with_supervisor() -> None:
    # Under DeepSpeed our parent is the launcher, not the worker: LAWGPT_SUPERVISOR_PID names the
    # worker, and a pidfd tells us the moment it is gone (a pidfd cannot be fooled by pid reuse).
    pid = os.environ.get("LAWGPT_SUPERVISOR_PID")
    if not pid or not hasattr(os, "pidfd_open"):
        return
    try:
        pidfd = os.pidfd_open(int(pid))
    except ProcessLookupError:
        os.kill(os.getpid(), signal.SIGKILL)
        return

    def watch() -> None:
        select.select([pidfd], [], [])
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lawgpt_trainer", description=__doc__)
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--request", required=True, help="path of the request JSON (see contract.schema.json)")
    args = parser.parse_args(argv)

    _die_with_parent()
    _die_with_supervisor()
    events = EventStream.take_stdout()
    try:
        request = contract.load_request(args.request, args.stage)
        events.emit("started", stage=args.stage, trainer_version=running_version(), pid=os.getpid())
        stage = importlib.import_module(f"lawgpt_trainer.stages.{args.stage}")
        outputs, metrics = stage.run(request, events)
        events.emit("completed", outputs=outputs, metrics=metrics)
        return 0
    except InvalidInput as e:
        print(f"invalid input: {e}", file=sys.stderr)
        events.emit("failed", kind="invalid_input", message=str(e))
        return contract.exit_invalid_input()
    except Interrupted as e:
        events.emit("failed", kind="interrupted", message=str(e))
        return contract.schema()["exit_interrupted"]
    except Exception as e:  # noqa: BLE001 - reported to the orchestrator, which decides on retries
        traceback.print_exc()
        events.emit("failed", kind="internal", message=f"{type(e).__name__}: {e}")
        return 1
