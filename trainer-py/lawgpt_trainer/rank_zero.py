"""Data that rank 0 prepares once, in a folder every rank reads (on one host, or a shared filesystem
across hosts), while the other ranks wait for it: pretrain's tokenized blocks, sft's encoded samples.

Rank 0 touches PREPARING_FILE as it goes and writes FAILED_FILE should it fail. Should it die, a
host's launcher stops that host's ranks, but not those of other hosts, which would wait until the
stage timed out, days later; they give up once it falls silent instead."""

import threading
import time
from pathlib import Path

from lawgpt_trainer.errors import InvalidInput

PREPARING_FILE = ".preparing"
FAILED_FILE = ".failed"
BEAT_SECONDS = 10
# Well past a shared filesystem's attribute caching (NFS: up to 60 s).
SILENCE_SECONDS = 300
# Before its first touch: rank 0 may reach the folder later than the others (a slower load of the
# tokenizer, say), but not this much later.
FIRST_TOUCH_SECONDS = 1800


def write_whole(path: Path, text: str) -> None:
    """Writes a file the other ranks look for, renamed into place once whole: a shared filesystem
    may show another host a file's content only once it is closed."""
    partial = path.with_name(f"{path.name}.partial")
    partial.write_text(text, "utf-8")
    partial.rename(path)


def prepare_for_every_rank(folder: Path, prepare) -> None:
    """prepare(), the other ranks told that it goes on, and whether it failed; the folder is left
    as prepare() leaves it (the block cache takes pretrain's as it is)."""
    folder.mkdir(parents=True, exist_ok=True)
    beat, stop = folder / PREPARING_FILE, threading.Event()

    def keep_beating() -> None:
        while not stop.wait(BEAT_SECONDS):
            beat.touch()

    beat.touch()
    beating = threading.Thread(target=keep_beating, daemon=True)
    beating.start()
    try:
        prepare()
    except BaseException as e:
        write_whole(folder / FAILED_FILE, f"{type(e).__name__}: {e}")
        raise
    finally:
        stop.set()
        beating.join()
        beat.unlink(missing_ok=True)


def wait_for_rank_0(folder: Path, done_file: str, what: str) -> None:
    """Returns once rank 0 has written `done_file`, the last file of `what` it prepares; raises
    once it has failed (InvalidInput where rank 0's failure was one: every rank then exits as
    rank 0 does, whichever the launcher sees first), or gone SILENCE_SECONDS without touching
    PREPARING_FILE (FIRST_TOUCH_SECONDS before it first does; a rank 0 that dies without a word,
    on a full disk, may also take PREPARING_FILE with it)."""
    beat, seen, heard, since = folder / PREPARING_FILE, None, False, time.monotonic()
    while not (folder / done_file).is_file():
        if (folder / FAILED_FILE).is_file():
            failure = (folder / FAILED_FILE).read_text("utf-8")
            raise (InvalidInput if failure.startswith(f"{InvalidInput.__name__}: ") else RuntimeError)(f"rank 0 failed to prepare {what} ({failure})")
        try:
            touched = beat.stat().st_mtime
        except FileNotFoundError:
            touched = None
        if touched != seen:
            seen, since, heard = touched, time.monotonic(), heard or touched is not None
        elif time.monotonic() - since > (limit := SILENCE_SECONDS if heard else FIRST_TOUCH_SECONDS):
            raise RuntimeError(f"rank 0 has not been heard from in {limit} s of preparing {what} (killed?): giving up waiting")
        time.sleep(0.2)
