"""The corpus as fixed-length token blocks for causal language modelling, prepared at corpus scale.

Worker processes read, clean and tokenize the corpus's files, a batch of files per task, in order;
this process drops repeated documents, splits by key, joins each side's token stream (every
document ended by EOS, as Chinese-LLaMA's group_texts) and cuts it into blocks written straight to
memory-mapped shards on disk. A bounded window of tasks is in flight, so memory does not grow with
the corpus, and every core tokenizes. Processes rather than the tokenizers library's own threads:
cleaning is Python and must run in parallel too, and a worker returns a file's ids as one array.

vocab reads the corpus the same way, as cleaned text (cleaned_documents), for SentencePiece.

A blocks folder is what the block cache stores, one S3 object per file:
    train-00000.bin, heldout-00000.bin, ...   raw token ids, blocks x block_size, row-major
    index.json                               block size, dtype, shards per split, cleaning report;
                                             written last: a folder without it is incomplete
"""

import contextlib
import json
import multiprocessing
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from lawgpt_trainer import cleaning, contract, data, rank_zero

INDEX_FILE = contract.schema()["blocks_index_file"]
FORMAT_VERSION = 1
SPLITS = ("train", "heldout")
SHARD_BYTES = 64 << 20
# Text per worker task: large enough to amortise the hand-over, small enough to keep order cheap.
TASK_BYTES = 1 << 20
# A document longer than this is tokenized a piece at a time, each cut after a line end. In one
# call a multi-GB file is one word to the tokenizer, whose time then grows faster than the text
# (0.9 MB/s at 64 MB, against 7.9 MB/s for ordinary files and 7.2 in pieces), and its encoding
# holds about 140 bytes a token: some 200 GB for a 5 GB file.
PIECE_CHARS = 1 << 16


def default_processes() -> int:
    return len(os.sched_getaffinity(0))


def _dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


# A worker's state, set once per process by _start_worker.
_worker: dict = {}


def _start_worker(tokenizer_json: str | None, cleaning_config: dict, dtype: str, max_line_chars: int | None) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json) if tokenizer_json else None
    _worker.update(tokenizer=tokenizer, cleaning=cleaning_config, dtype=np.dtype(dtype), max_line_chars=max_line_chars)


def _pieces(text: str):
    """The text in pieces of at most PIECE_CHARS, each cut after a line end where there is one."""
    start = 0
    while start < len(text):
        end = start + PIECE_CHARS
        if end < len(text):
            line_end = text.rfind("\n", start, end)
            end = line_end + 1 if line_end > start else end
        yield text[start:end]
        start = end


def _ids_after_a_line_end(tokenizer, piece: str) -> list[int]:
    """A piece's ids as the piece reads in its document, after a line end: encoded alone, it would
    begin as a text does (SentencePiece's "▁" before its first word), so it is encoded after one,
    whose own tokens are dropped."""
    encoding = tokenizer.encode("\n" + piece, add_special_tokens=False)
    offsets = encoding.offsets
    first = next((k for k, (start, _) in enumerate(offsets) if start >= 1), len(offsets))
    if first and offsets[first - 1][1] > 1:
        # A token joins the line end to the piece's first character: none can be dropped whole.
        return tokenizer.encode(piece, add_special_tokens=False).ids
    return encoding.ids[first:]


def encode(tokenizer, text: str, dtype: np.dtype) -> np.ndarray:
    """A document's token ids (a tokenizers.Tokenizer's), tokenized a piece of at most PIECE_CHARS
    at a time: the same ids as one call gives, where every piece ends at a line end (a line longer
    than a piece is cut inside, and its second part begins as a text does)."""
    parts = [
        np.asarray(tokenizer.encode(piece, add_special_tokens=False).ids if k == 0 else _ids_after_a_line_end(tokenizer, piece), dtype=dtype)
        for k, piece in enumerate(_pieces(text))
    ]
    return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)


def _prepare_file(source: data.Source, want: str | None) -> tuple:
    """One document, a file or a part of one, as (source, state, digest, payload, problems): state
    is blank (not a document), short, or kept; payload is what `want`s of the cleaned text, its
    token "ids" or the "text" itself; problems are its bad records (data.BadRecords)."""
    text, problems = data.read_document(source, _worker["max_line_chars"])
    if text is None or not text.strip():
        return source, "blank", None, None, problems
    cleaned = cleaning.clean_text(text, _worker["cleaning"])
    if cleaned is None:
        return source, "short", None, None, problems
    text, digest = cleaned
    payload = encode(_worker["tokenizer"], text, _worker["dtype"]) if want == "ids" else text if want == "text" else None
    return source, "kept", digest, payload, problems


def _prepare_files(batch: list[tuple[data.Source, str | None]]) -> list[tuple]:
    return [_prepare_file(*task) for task in batch]


def _batches(tasks: list[tuple[data.Source, str | None]]) -> list[list[tuple[data.Source, str | None]]]:
    batches, size = [[]], 0
    for task in tasks:
        if size >= TASK_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(task)
        size += task[0].size
    return batches


def _prepared(tasks: list[tuple[data.Source, str | None]], processes: int, worker_args: tuple):
    """Every file's result, in corpus order; files are prepared ahead in a bounded window."""
    batches = _batches(tasks)
    processes = min(processes, len(batches))
    if processes <= 1:
        _start_worker(*worker_args)
        for batch in batches:
            yield from _prepare_files(batch)
        return
    # Forked, as DataLoader and datasets workers are: no re-import of the caller's main module, and
    # the workers touch nothing of torch's, only numpy and the tokenizer.
    # Left early, the tasks in flight (the window, a few MB of text) finish before the workers go.
    # multiprocessing.Pool terminated its workers instead, and one killed while handing back its
    # result left the pool's queue locked: the exit hung.
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork"), initializer=_start_worker, initargs=worker_args) as pool:
        window: deque = deque()
        try:
            for batch in batches:
                window.append(pool.submit(_prepare_files, batch))
                if len(window) >= 2 * processes:
                    yield from window.popleft().result()
            while window:
                yield from window.popleft().result()
        except BrokenProcessPool as e:
            raise RuntimeError("a corpus preparation worker died (killed, or out of memory?)") from e


class _ShardWriter:
    """One side's token stream, cut into blocks and appended to shard files; a remainder shorter
    than a block waits for the next document and is dropped at the end."""

    def __init__(self, folder: Path, tag: str, block_size: int, dtype: np.dtype, eos: int):
        self.folder, self.tag, self.block_size, self.dtype = folder, tag, block_size, dtype
        self.eos = np.array([eos], dtype=dtype)
        self.blocks_per_shard = max(1, SHARD_BYTES // (block_size * dtype.itemsize))
        self.carry = np.empty(0, dtype=dtype)
        self.shards: list[dict] = []
        self.blocks = 0
        self.documents = 0
        self._file = None

    def add(self, ids: np.ndarray) -> None:
        self.documents += 1
        stream = np.concatenate([self.carry, ids, self.eos])
        full = len(stream) - len(stream) % self.block_size
        rows = stream[:full].reshape(-1, self.block_size)
        while len(rows):
            if self._file is None or self.shards[-1]["blocks"] == self.blocks_per_shard:
                self._next_shard()
            room = self.blocks_per_shard - self.shards[-1]["blocks"]
            self._file.write(rows[:room].tobytes())
            self.shards[-1]["blocks"] += len(rows[:room])
            self.blocks += len(rows[:room])
            rows = rows[room:]
        self.carry = stream[full:].copy()

    def _next_shard(self) -> None:
        self.close()
        self.shards.append({"file": f"{self.tag}-{len(self.shards):05d}.bin", "blocks": 0})
        self._file = (self.folder / self.shards[-1]["file"]).open("wb")

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None

    def publish(self, split: str) -> dict:
        """Renames the shards for `split` and describes them for the index."""
        self.close()
        for shard in self.shards:
            name = f"{split}-{shard['file'].split('-', 1)[1]}"
            (self.folder / shard["file"]).rename(self.folder / name)
            shard["file"] = name
        return {"blocks": self.blocks, "documents": self.documents, "shards": self.shards}


# What cleaning counts, as cleaning.report's arguments.
_DROPPED = ("documents", "short", "duplicate", "skipped")


def _sides_of(heldout_percent: int):
    return lambda key: "heldout" if data.is_heldout(key, heldout_percent) else "train"


def _kept_documents(prepared, cleaning_config: dict, bad: data.BadRecords, counts: dict):
    """The documents of `prepared` that cleaning keeps, as (source, payload), in order; what it
    drops is counted in `counts` (cleaning.report's arguments), bad records go to `bad`."""
    seen: set[bytes] = set()
    for source, state, digest, payload, problems in prepared:
        for where, problem in problems:
            bad.reject(where, problem)
        counts["skipped"] += len(problems)
        if state == "blank":
            continue
        counts["documents"] += 1
        if state == "short":
            counts["short"] += 1
            continue
        if cleaning_config["deduplicate"] and digest in seen:
            counts["duplicate"] += 1
            continue
        seen.add(digest)
        yield source, payload


def _split(documents, side_of, sides: dict) -> dict | None:
    """Hands each document to its side, `sides[side].add(side, source, payload)`, as
    data.split_documents splits them, and returns the sides as they end up; None without a
    document. A split that leaves a side empty moves the last document, which therefore waits:
    everything on the training side holds it out; everything held out trains all the others,
    the sides swapped; a single document goes to both."""
    kept = dict.fromkeys(SPLITS, 0)
    pending = None
    for source, payload in documents:
        if pending:
            sides[pending[0]].add(*pending)
        side = side_of(source.key)
        kept[side] += 1
        pending = (side, source, payload)
    if pending is None:
        return None
    side, *last = pending
    if all(kept.values()):
        sides[side].add(side, *last)
    elif sum(kept.values()) == 1:
        sides["train"].add("train", *last)
        sides["heldout"].add("heldout", *last)
    elif kept["heldout"] == 0:
        sides["heldout"].add("heldout", *last)
    else:
        sides = {"train": sides["heldout"], "heldout": sides["train"]}
        sides["heldout"].add("heldout", *last)
    return sides


def _read_split(corpus: str, tasks: list, worker_args: tuple, cleaning_config: dict, heldout_percent: int, sides: dict, bad: data.BadRecords, processes: int | None) -> tuple[dict, dict]:
    """Reads, cleans and splits the corpus's `tasks` in worker processes, handing each kept
    document to its side (_split); returns the sides as they end up and the cleaning report."""
    counts = dict.fromkeys(_DROPPED, 0)
    # Closed however reading ends, a bad record's error included: the workers stop there.
    with contextlib.closing(_prepared(tasks, processes or default_processes(), worker_args)) as prepared:
        ended = _split(_kept_documents(prepared, cleaning_config, bad, counts), _sides_of(heldout_percent), sides)
    if ended is None:
        raise cleaning.nothing_left(corpus, len({source.path for source, _ in tasks}), counts["documents"])
    return ended, cleaning.report(**counts)


def cleaned_documents(corpus: str, cleaning_config: dict, heldout_percent: int, sides: dict, bad: data.BadRecords, processes: int | None = None) -> tuple[dict, dict]:
    """Hands every document that cleaning keeps to its side of the split, as its cleaned text
    (`sides[side].add(side, source, text)`), with nothing more of the corpus in memory than the
    window in flight; returns the sides as they end up (see _split) and the cleaning report."""
    worker_args = (None, cleaning_config, np.dtype(np.uint8).str, bad.max_line_chars)
    tasks = [(source, "text") for source in data.corpus_files(corpus, bad.events)]
    return _read_split(corpus, tasks, worker_args, cleaning_config, heldout_percent, sides, bad, processes)


class _Blocks:
    """One side of prepare's split: its blocks, when the stage asked for that side."""

    def __init__(self, writer: _ShardWriter, splits: tuple[str, ...], worker_args: tuple):
        self.writer, self.splits, self.worker_args = writer, splits, worker_args

    def add(self, side: str, source: data.Source, ids) -> None:
        if side not in self.splits:
            return
        if ids is None:
            # Its side was not tokenized, and the end of the split moved it (rare: a tiny corpus).
            _start_worker(*self.worker_args)
            ids = _prepare_file(source, "ids")[3]
        self.writer.add(ids)


def prepare(
    corpus: str,
    cleaning_config: dict,
    heldout_percent: int,
    tokenizer,
    block_size: int,
    out: Path,
    splits: tuple[str, ...] = SPLITS,
    processes: int | None = None,
    bad: data.BadRecords | None = None,
) -> dict:
    """Writes the blocks folder `out` for the corpus and returns its index.

    Cleaning and the split are those of cleaning.clean and data.split_documents, so the blocks
    equal what packing every document of each side in order would give. Only the `splits` asked
    for are tokenized (eval needs held-out text alone). Bad records (an unreadable file, an
    over-long line) go to `bad`, and the index's report counts them."""
    out.mkdir(parents=True, exist_ok=True)
    bad = bad or data.BadRecords()
    dtype = _dtype(len(tokenizer))
    worker_args = (tokenizer.backend_tokenizer.to_str(), cleaning_config, dtype.str, bad.max_line_chars)
    side_of = _sides_of(heldout_percent)
    tasks = [(source, "ids" if side_of(source.key) in splits else None) for source in data.corpus_files(corpus, bad.events)]
    sides = {side: _Blocks(_ShardWriter(out, f"part{i}", block_size, dtype, tokenizer.eos_token_id), splits, worker_args) for i, side in enumerate(SPLITS)}
    ended, report = _read_split(corpus, tasks, worker_args, cleaning_config, heldout_percent, sides, bad, processes)

    index = {
        "format_version": FORMAT_VERSION,
        "block_size": block_size,
        "dtype": dtype.name,
        "splits": {split: ended[split].writer.publish(split) for split in SPLITS},
        "report": report,
    }
    rank_zero.write_whole(out / INDEX_FILE, json.dumps(index, indent=2))
    return index


class Blocks:
    """One split of a blocks folder, as a map-style dataset over its memory-mapped shards: rows
    are read on access, so nothing of the corpus is held in memory. Loss is on every token, so
    labels are the inputs (the model shifts them). With a `limit` under the split's blocks, that
    many spread evenly over it: the first ones would all come from the first few documents in the
    corpus's order, one folder of it, where a held-out figure must speak for the whole."""

    def __init__(self, folder: Path, index: dict, split: str, limit: int | None = None):
        dtype, width = np.dtype(index["dtype"]), index["block_size"]
        self.shards = [np.memmap(folder / s["file"], dtype=dtype, mode="r", shape=(s["blocks"], width)) for s in index["splits"][split]["shards"]]
        self.starts = np.cumsum([0] + [len(s) for s in self.shards])
        self.total = int(self.starts[-1])
        self.length = self.total if limit is None else min(limit, self.total)

    def __len__(self) -> int:
        return self.length

    def row(self, i: int) -> np.ndarray:
        if not 0 <= i < self.length:
            raise IndexError(i)
        i = i * self.total // self.length
        shard = int(np.searchsorted(self.starts, i, side="right")) - 1
        return np.asarray(self.shards[shard][i - self.starts[shard]], dtype=np.int64)

    def rows(self, start: int, stop: int) -> np.ndarray:
        return np.stack([self.row(i) for i in range(start, min(stop, self.length))])

    def __getitem__(self, i: int) -> dict:
        ids = self.row(i)
        return {"input_ids": ids, "labels": ids.copy(), "attention_mask": np.ones_like(ids)}


def load(folder: Path, block_size: int, heldout_limit: int | None = None) -> tuple[Blocks, Blocks, dict]:
    """The training and held-out blocks of a folder `prepare` wrote (`heldout_limit` of the held-out
    ones, spread over them), with its index; a folder that is incomplete or of another block size is refused."""
    path = folder / INDEX_FILE
    if not path.is_file():
        raise RuntimeError(f"{folder} has no {INDEX_FILE}: its blocks are incomplete")
    index = json.loads(path.read_text("utf-8"))
    if index["format_version"] != FORMAT_VERSION or index["block_size"] != block_size:
        raise RuntimeError(f"blocks in {folder} are format {index['format_version']} with {index['block_size']} tokens a block; this trainer needs format {FORMAT_VERSION} with {block_size}")
    itemsize = np.dtype(index["dtype"]).itemsize
    for split in SPLITS:
        for shard in index["splits"][split]["shards"]:
            size, expected = (folder / shard["file"]).stat().st_size, shard["blocks"] * block_size * itemsize
            if size != expected:
                raise RuntimeError(f"{folder / shard['file']} has {size} bytes, its index says {expected}")
    return Blocks(folder, index, "train"), Blocks(folder, index, "heldout", heldout_limit), index
