"""The ML half of lawgpt-pipeline: one module per pipeline stage, run by the orchestrator as
`python -m lawgpt_trainer <stage> --request <request.json>` (see contract.py)."""

import functools
import hashlib
from pathlib import Path

__version__ = "0.1.0"


def fingerprint() -> str:
    """The trainer version: the release plus a hash of every source and data file of this package,
    since the stage cache must not reuse outputs of a trainer whose code has changed, released or
    not. The one identity of the trainer: cache keys, `started` events and manifests all carry it."""
    root = Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".json")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:16]}"


@functools.cache
def running_version() -> str:
    """fingerprint() of the code this process runs: taken once, when the trainer starts (cli.main),
    so a checkpoint saved after the package was edited on disk still names the code that saved it."""
    return fingerprint()
