"""Instruction samples, encoded, in a folder that every rank maps instead of holding them: rank 0
encodes the run's samples once (rank_zero) and the ranks read rows from memory-mapped files, which
the page cache keeps once per host. Every rank used to encode them all and hold them: at
configs/lawgpt.json's 1M samples, about 2.4 GB a rank even as int32 arrays, 19 GB on a host of 8
ranks, and the tokenizing done 8 times over.

A samples folder:
    input_ids.bin   every sample's token ids, one sample after another (int32)
    labels.bin      their labels, IGNORE_INDEX where the loss skips the prompt (int32)
    offsets.bin     where each sample starts, and where the last one ends (int64, samples + 1)
    index.json      the counts; written last: a folder without it is incomplete
"""

import json
from pathlib import Path

import numpy as np

from lawgpt_trainer import rank_zero
from lawgpt_trainer.prompt import IGNORE_INDEX

INDEX_FILE = "index.json"
_FILES = {"input_ids": "input_ids.bin", "labels": "labels.bin"}


def write(encoded, folder: Path, counts: dict | None = None) -> dict:
    """Writes the `encoded` samples (prompt.encode's) that keep a response token within the
    cutoff, in order, and returns the index: the samples kept, those left out for want of a
    response token (`over_cutoff`), the tokens, and `counts` (what reading the samples left out:
    every rank learns them from the index)."""
    folder.mkdir(parents=True, exist_ok=True)
    offsets, over_cutoff = [0], 0
    with open(folder / _FILES["input_ids"], "wb") as ids, open(folder / _FILES["labels"], "wb") as labels:
        for item in encoded:
            item_ids, item_labels = np.asarray(item["input_ids"], dtype=np.int32), np.asarray(item["labels"], dtype=np.int32)
            if len(item_ids) != len(item_labels):
                raise ValueError(f"a sample of {len(item_ids)} token ids has {len(item_labels)} labels")
            if not (item_labels != IGNORE_INDEX).any():
                over_cutoff += 1
                continue
            ids.write(item_ids.tobytes())
            labels.write(item_labels.tobytes())
            offsets.append(offsets[-1] + len(item_labels))
    np.asarray(offsets, dtype=np.int64).tofile(folder / "offsets.bin")
    index = {"samples": len(offsets) - 1, "over_cutoff": over_cutoff, "tokens": offsets[-1], **(counts or {})}
    rank_zero.write_whole(folder / INDEX_FILE, json.dumps(index))
    return index


def _packed(offsets: np.ndarray, cutoff_len: int) -> np.ndarray:
    """The first sample of each packed sequence, and the end: consecutive samples join the sequence
    before them while it stays within cutoff_len tokens."""
    starts, used = [0], 0
    for k, length in enumerate(np.diff(offsets).tolist()):
        if k > starts[-1] and used + length > cutoff_len:
            starts.append(k)
            used = 0
        used += length
    starts.append(len(offsets) - 1)
    return np.asarray(starts, dtype=np.int64)


class Samples:
    """A samples folder as a map-style dataset of {input_ids, labels} int32 arrays: item i is
    sample i or, with `pack_to` (sft's cutoff_len), the i-th sequence of consecutive samples
    packed up to that many tokens."""

    def __init__(self, folder: Path, pack_to: int | None = None):
        self.index = json.loads((folder / INDEX_FILE).read_text("utf-8"))
        self.offsets = np.fromfile(folder / "offsets.bin", dtype=np.int64)
        # An empty file cannot be mapped; a folder of no sample has no rows to read.
        self.columns = {name: np.memmap(folder / file, dtype=np.int32, mode="r") if self.index["tokens"] else np.empty(0, np.int32) for name, file in _FILES.items()}
        self.starts = _packed(self.offsets, pack_to) if pack_to and self.index["samples"] else np.arange(self.index["samples"] + 1)

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(i)
        begin, end = self.offsets[self.starts[i]], self.offsets[self.starts[i + 1]]
        return {name: np.array(column[begin:end]) for name, column in self.columns.items()}
