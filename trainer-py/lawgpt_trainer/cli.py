"""`python -m lawgpt_trainer <stage> --request <request.json> [--wait-for-request]`: runs one stage
and reports on stdout."""

import argparse
import ctypes
import errno
import importlib
import os
import select
import shutil
import signal
import sys
import threading
import time
import traceback

from lawgpt_trainer import artifacts, contract, distributed, running_version, startup
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


# Installed beside the trainer for bench/corpus_prep.py's peer, never used by it, but imported by
# transformers' Trainer whenever it is installed, pandas and pyarrow with it: 0.4-0.7 s of every
# launch and 87 MB of every rank's host memory in a bare import on the development machine.
UNUSED_LIBRARIES = ("datasets",)


def leave_out_unused_libraries() -> None:
    for name in UNUSED_LIBRARIES:
        # A None entry makes importing it fail and importlib.util.find_spec answer "not installed".
        sys.modules.setdefault(name, None)


# How often a trainer started with --wait-for-request looks for its request: a small share of the
# seconds that importing torch and transformers takes.
REQUEST_POLL_SECONDS = 0.05


def _wait_for(path: str) -> None:
    # The orchestrator renames the finished request into place, so once the path exists it is whole.
    # Nothing else ends the wait: a trainer whose orchestrator gives up is killed with its group.
    while not os.path.exists(path):
        time.sleep(REQUEST_POLL_SECONDS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lawgpt_trainer", description=__doc__)
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--request", required=True, help="path of the request JSON (see contract.schema.json)")
    parser.add_argument(
        "--wait-for-request",
        action="store_true",
        help="import the stage's code first, then wait for the request file to appear: the orchestrator "
        "starts the trainer while it is still downloading the inputs, so the imports cost no time",
    )
    args = parser.parse_args(argv)

    leave_out_unused_libraries()
    _die_with_parent()
    _die_with_supervisor()
    events = EventStream.take_stdout()
    output_dir = None
    try:
        if args.wait_for_request:
            importlib.import_module(f"lawgpt_trainer.stages.{args.stage}")
            _wait_for(args.request)
        request = contract.load_request(args.request, args.stage)
        output_dir = request["output_dir"]
        events.emit("started", stage=args.stage, trainer_version=running_version(), pid=os.getpid())
        artifacts.check_inputs(request)
        stage = importlib.import_module(f"lawgpt_trainer.stages.{args.stage}")
        startup.mark("imports")
        outputs, metrics = stage.run(request, events)
        distributed.shutdown()
        events.emit("completed", outputs=outputs, metrics=metrics)
        return 0
    except InvalidInput as e:
        print(f"invalid input: {e}", file=sys.stderr)
        events.emit("failed", kind="invalid_input", message=str(e))
        return contract.exit_invalid_input()
    except Interrupted as e:
        distributed.shutdown()
        events.emit("failed", kind="interrupted", message=str(e))
        return contract.schema()["exit_interrupted"]
    except Exception as e:  # noqa: BLE001 - reported to the orchestrator, which decides on retries
        traceback.print_exc()
        events.emit("failed", kind="internal", message=_describe(e, output_dir))
        return 1


# Below this, a failed write is taken for a full disk even when the library's error does not say
# so (torch.save reports only "file write failed").
NEARLY_FULL_BYTES = 1 << 20


def _describe(error: Exception, output_dir: str | None) -> str:
    """The failure as the orchestrator shows it; a full disk says so, and what to do."""
    message = f"{type(error).__name__}: {error}"
    if output_dir is None or not os.path.isdir(output_dir):
        return message
    free = shutil.disk_usage(output_dir).free
    chain, cause = [], error
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    said = any(isinstance(c, OSError) and c.errno == errno.ENOSPC or "No space left on device" in str(c) for c in chain)
    if not said and free >= NEARLY_FULL_BYTES:
        return message
    return (
        f"no space left on the device of {output_dir} ({free:,} bytes free): {message}. Nothing partial was handed over; "
        "free space in the worker's LAWGPT_WORK_DIR and a retry resumes from the last committed checkpoint"
    )
