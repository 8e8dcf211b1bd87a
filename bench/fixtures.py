"""What the Python benchmarks share: their parameters, the merged tokenizer and models made by the
trainer's own stages (cached under the bench work folder), and a meter of a process tree's memory.

A benchmark runs as `python bench/<name>.py --params <file>` (bench/run.ts writes the file: the
parsed run config, the shared data folder, the work folder, quick or not) and prints one JSON line
last: {"ours": [...], "peer": [...], "notes": {...}}."""

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from lawgpt_trainer import contract


def params() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", required=True)
    return json.loads(Path(parser.parse_args().params).read_text("utf-8"))


def report(ours: list[float], peer: list[float] | None = None, **notes) -> None:
    print(json.dumps({"ours": ours, "peer": peer, "notes": notes}, ensure_ascii=False), flush=True)


def run_stage(p: dict, stage: str, inputs: dict, out: Path, config: dict | None = None) -> tuple[Path, dict]:
    """Runs a stage through the trainer's CLI, as the orchestrator does; returns its output folder
    and the metrics it reported."""
    # Nothing of an earlier run (another tokenizer's blocks, say) may pass for this one's output.
    shutil.rmtree(out / "out", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    run = p["config"]
    request = {
        "contract_version": contract.schema()["contract_version"],
        "run_id": "bench",
        "stage": stage,
        "output_dir": str(out / "out"),
        "split": run["data"]["split"],
        "cleaning": run["data"]["cleaning"],
        "on_bad_record": run["data"]["on_bad_record"],
        "max_line_chars": run["data"]["max_line_chars"],
        "inputs": {k: str(v) for k, v in inputs.items()},
        "config": config or run[stage],
    }
    (out / "request.json").write_text(json.dumps(request), "utf-8")
    done = subprocess.run([sys.executable, "-m", "lawgpt_trainer", stage, "--request", str(out / "request.json")], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{stage} failed:\n{done.stderr[-3000:]}")
    completed = json.loads(done.stdout.splitlines()[-1])
    return out / "out", completed["metrics"]


class NoEvents:
    """Stands in for the trainer's event stream where a benchmark calls a stage in-process."""

    def progress(self, *args, **kwargs) -> None:
        pass

    def log(self, *args, **kwargs) -> None:
        pass


def corpus(p: dict) -> Path:
    return Path(p["shared_data"]) / "corpus"


def merged_tokenizer(p: dict) -> Path:
    """The base tokenizer merged with a vocabulary trained on the shared corpus by the vocab stage
    (with --quick, on its statutes of civil and commercial law alone)."""
    folder = Path(p["work"]) / f"tokenizer-{p['config']['vocab']['vocab_size']}{'-quick' if p['quick'] else ''}"
    if not (folder / "out" / "tokenizer" / "tokenizer.json").is_file():
        base, _ = run_stage(p, "base", {}, Path(p["work"]) / "base")
        source = corpus(p) / "statutes" / "民法商法" if p["quick"] else corpus(p)
        run_stage(p, "vocab", {"corpus": source, "base_tokenizer": base / "tokenizer"}, folder)
    return folder / "out" / "tokenizer"


class PeakMemory:
    """The peak proportional set size (PSS) of this process and its children while in use: forked
    workers share pages with their parent, which plain RSS would count twice."""

    def __init__(self, period: float = 0.02):
        self.period, self.peak = period, 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        me = psutil.Process(os.getpid())
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_full_info().pss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(self.period)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
