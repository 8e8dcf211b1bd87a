"""`python -m lawgpt_trainer.runner <DeepSpeed runner arguments>`: DeepSpeed's runner for a stage
across hosts, stopped when the worker that started it dies.

Across hosts every rank, the worker's host's included, is a child of its host's sshd: none sees the
worker go, and they would train on, unwatched, into the GPUs the stage's retry needs. The runner
answers SIGTERM by stopping every host's launcher (pkill over pdsh), and the kernel sends it one
when its parent, the worker, dies (PR_SET_PDEATHSIG)."""

import ctypes
import os
import runpy
import signal
import sys

PR_SET_PDEATHSIG = 1


def main() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    # A worker gone before that call sent nothing: we would run with no one to report to.
    if os.environ.get("LAWGPT_SUPERVISOR_PID") not in (None, str(os.getppid())):
        sys.exit("lawgpt_trainer.runner: the worker that started this stage is gone")
    sys.argv = ["deepspeed.launcher.runner", *sys.argv[1:]]
    runpy.run_module("deepspeed.launcher.runner", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
