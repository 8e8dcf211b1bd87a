"""Checkpoints as the orchestrator sees them: a finished Hugging Face checkpoint folder plus a
manifest.json (layout in contract.schema.json) that lists every file with its size and sha256.

The manifest is what makes a checkpoint exist: it is written last, after the folder is complete,
and resuming checks the checkpoint against it and against the run that wants to continue."""

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lawgpt_trainer import contract, running_version
from lawgpt_trainer.errors import InvalidInput


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# Files hashed at the same time (hashing releases the GIL): a 7B trained in full leaves about
# 100 GB of optimizer shards a checkpoint, minutes of sha256 on one core, and the final checkpoint
# of a stop must be hashed within runtime.stop_grace_seconds. Four, and no more than the cores this
# process may use: the others feed training, which goes on while checkpoints are hashed.
HASHING_THREADS = min(4, len(os.sched_getaffinity(0)))


# How long rank 0 waits to see a file another rank says it wrote: a shared filesystem may cache
# what a folder holds (NFS: up to a minute).
VISIBLE_WITHIN_SECONDS = 120


def files_in(folder: Path) -> list[str]:
    """The checkpoint files this process sees in `folder`, relative, the manifest aside."""
    name = contract.schema()["manifest_file"]
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != name)


def _visible(folder: Path, names: list[str]) -> list[Path]:
    deadline = time.monotonic() + VISIBLE_WITHIN_SECONDS
    while missing := [n for n in names if not (folder / n).is_file()]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{folder}: files other ranks wrote are not here after {VISIBLE_WITHIN_SECONDS} s, e.g. {missing[:3]} (is the work folder one filesystem, shared by every host?)")
        time.sleep(1)
    return [folder / n for n in names]


def write_manifest(folder: Path, names: list[str], request: dict, step: int, world_size: int, vocab_size: int, eval_loss: float | None = None, zero_stage: int | None = None) -> dict:
    """Hashes the checkpoint's files `names` (what every rank saw of it, files_in; each waited for
    until this process sees it too) into the manifest that makes the checkpoint exist."""
    name = contract.schema()["manifest_file"]
    files = _visible(folder, sorted(names))
    with ThreadPoolExecutor(HASHING_THREADS, thread_name_prefix="sha256") as pool:
        digests = list(pool.map(_sha256, files))
    manifest = {
        "manifest_version": 1,
        "run_id": request["run_id"],
        "stage": request["stage"],
        "step": step,
        "world_size": world_size,
        "config_hash": config_hash(request["config"]),
        "vocab_size": vocab_size,
        "trainer_version": running_version(),
        **({"eval_loss": eval_loss} if eval_loss is not None else {}),
        **({"zero_stage": zero_stage} if zero_stage is not None else {}),
        **({"inputs_hash": request["inputs_hash"]} if request.get("inputs_hash") else {}),
        "files": [{"path": p.relative_to(folder).as_posix(), "size": p.stat().st_size, "sha256": digest} for p, digest in zip(files, digests)],
    }
    broken = contract.problems("manifest", manifest)
    if broken:
        raise ValueError(f"manifest breaks the contract: {broken}")
    (folder / name).write_text(json.dumps(manifest, indent=2), "utf-8")
    return manifest


def check_resumable(folder: str, request: dict, world_size: int, vocab_size: int) -> dict:
    """The manifest of the checkpoint to resume from, if this run may continue from it."""
    path = Path(folder) / contract.schema()["manifest_file"]
    try:
        manifest = json.loads(path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise InvalidInput(f"cannot resume from {folder}: no readable manifest ({e})") from e
    broken = contract.problems("manifest", manifest)
    if broken:
        raise InvalidInput(f"cannot resume from {folder}: invalid manifest: {broken}")
    expected = {
        "stage": request["stage"],
        "world_size": world_size,
        "vocab_size": vocab_size,
        "config_hash": config_hash(request["config"]),
    }
    if request.get("inputs_hash") and manifest.get("inputs_hash"):
        expected["inputs_hash"] = request["inputs_hash"]
    mismatched = [f"{k} is {manifest[k]!r} there, {v!r} here" for k, v in expected.items() if manifest[k] != v]
    if mismatched:
        raise InvalidInput(f"cannot resume from checkpoint-{manifest['step']}: " + "; ".join(mismatched))
    return manifest


def written_zero_stage(folder: str) -> int | None:
    """The ZeRO stage the checkpoint in `folder` was written under, when its manifest says one that
    is; check_resumable says what else is wrong with it."""
    try:
        stage = json.loads((Path(folder) / contract.schema()["manifest_file"]).read_text("utf-8")).get("zero_stage")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return stage if type(stage) is int and 0 <= stage <= 3 else None
