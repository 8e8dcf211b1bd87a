"""Corpus preparation: parallel, streamed into memory-mapped shards, and block for block what
packing every cleaned document of each side in order gives."""

import multiprocessing
import os
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest
from transformers import AutoTokenizer

from conftest import CLEANING, SHARED_DATA

from lawgpt_trainer import cleaning, data, packing
from lawgpt_trainer.errors import InvalidInput


def reference_blocks(corpus, tokenizer, block_size: int, percent: int = 10) -> dict[str, np.ndarray]:
    """The plain way: every document in memory, each side's stream in one list, cut into blocks."""
    docs, _ = cleaning.clean(data.read_corpus(str(corpus)), CLEANING)
    sides = dict(zip(packing.SPLITS, data.split_documents(docs, percent)))
    blocks = {}
    for side, side_docs in sides.items():
        stream = [t for d in side_docs for t in tokenizer(d.text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]]
        blocks[side] = np.array(stream[: len(stream) - len(stream) % block_size], dtype=np.int64).reshape(-1, block_size)
    return blocks


def prepared_blocks(folder, block_size: int) -> dict[str, np.ndarray]:
    train, heldout, _ = packing.load(folder, block_size)
    return {side: blocks.rows(0, len(blocks)) if len(blocks) else np.zeros((0, block_size), np.int64) for side, blocks in zip(packing.SPLITS, (train, heldout))}


@pytest.fixture(scope="module")
def tokenizer(pipeline):
    return AutoTokenizer.from_pretrained(pipeline["vocab"].output_dir / "tokenizer")


def test_the_whole_corpus_packs_block_for_block_as_before(tokenizer, tmp_path, monkeypatch):
    # Small shards, so that blocks cross from one shard file to the next many times.
    monkeypatch.setattr(packing, "SHARD_BYTES", 256 * 1024)
    corpus = SHARED_DATA / "corpus"
    index = packing.prepare(str(corpus), CLEANING, 10, tokenizer, 128, tmp_path, processes=2)
    expected = reference_blocks(corpus, tokenizer, 128)
    got = prepared_blocks(tmp_path, 128)
    for side in packing.SPLITS:
        assert got[side].shape == expected[side].shape and np.array_equal(got[side], expected[side]), side
    assert len(index["splits"]["train"]["shards"]) > 10
    assert index["dtype"] == "uint16"
    assert index["report"] == cleaning.clean(data.read_corpus(str(corpus)), CLEANING)[1]


def test_a_long_document_is_tokenized_in_pieces_to_the_same_ids(tokenizer, monkeypatch):
    statutes = sorted((SHARED_DATA / "corpus" / "statutes").rglob("*.md"))[:200]
    text = cleaning.normalize("\n".join(p.read_text("utf-8") for p in statutes), True)
    # A line longer than a piece, cut inside: its second part may be tokenized otherwise, never lost.
    text += "法" * 10_000 + "\n" + text[: text.index("\n", 20_000) + 1]
    monkeypatch.setattr(packing, "PIECE_CHARS", 4096)
    pieces = list(packing._pieces(text))
    assert len(pieces) > 50 and "".join(pieces) == text
    assert all(len(p) <= 4096 for p in pieces) and sum(not p.endswith("\n") for p in pieces) == 2
    fast = tokenizer.backend_tokenizer
    whole = np.asarray(fast.encode(text, add_special_tokens=False).ids)
    ids = packing.encode(fast, text, np.dtype(np.uint32))
    cut = len(fast.encode(text[: text.index("法" * 10_000)], add_special_tokens=False).ids)
    assert np.array_equal(ids[:cut], whole[:cut])
    assert tokenizer.decode(ids[cut:]).replace(" ", "") == tokenizer.decode(whole[cut:]).replace(" ", "")


def test_a_corpus_that_is_one_large_file_is_split_by_its_parts(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "PART_BYTES", 20_000)
    (tmp_path / "corpus").mkdir()
    statutes = sorted((SHARED_DATA / "corpus" / "statutes").rglob("*.md"))[:100]
    (tmp_path / "corpus" / "dump.txt").write_text("\n".join(p.read_text("utf-8") for p in statutes), "utf-8")
    index = packing.prepare(str(tmp_path / "corpus"), CLEANING, 10, tokenizer, 32, tmp_path / "blocks", processes=2)
    # Held out part by part, as files are: not the whole file on both sides.
    assert 0 < index["splits"]["heldout"]["documents"] < index["splits"]["train"]["documents"]
    expected, got = reference_blocks(tmp_path / "corpus", tokenizer, 32), prepared_blocks(tmp_path / "blocks", 32)
    for side in packing.SPLITS:
        assert np.array_equal(got[side], expected[side]), side


def _corpus(root, names: list[str]):
    root.mkdir()
    statutes = sorted((SHARED_DATA / "corpus" / "statutes").rglob("*.md"))
    for name, source in zip(names, statutes[::50]):
        (root / name).write_text(source.read_text("utf-8")[:3000], "utf-8")
    return root


def _names(heldout: bool, count: int) -> list[str]:
    return [n for n in (f"doc-{i:03d}.md" for i in range(500)) if data.is_heldout(n, 10) == heldout][:count]


@pytest.mark.parametrize(
    "names",
    [_names(False, 3) + _names(True, 2), _names(False, 4), _names(True, 4), _names(True, 1)],
    ids=["both-sides", "all-train", "all-heldout", "single-document"],
)
@pytest.mark.parametrize("processes", [1, 2])
def test_a_split_that_leaves_a_side_empty_moves_documents_as_before(tokenizer, tmp_path, monkeypatch, names, processes):
    monkeypatch.setattr(packing, "TASK_BYTES", 1)  # a task per file, so that two workers share even these
    corpus = _corpus(tmp_path / "corpus", names)
    packing.prepare(str(corpus), CLEANING, 10, tokenizer, 32, tmp_path / "blocks", processes=processes)
    expected, got = reference_blocks(corpus, tokenizer, 32), prepared_blocks(tmp_path / "blocks", 32)
    for side in packing.SPLITS:
        assert len(expected[side]) > 0 and np.array_equal(got[side], expected[side]), side


def test_heldout_alone_is_tokenized_and_a_limit_spreads_its_blocks_over_it(tokenizer, tmp_path):
    corpus = str(SHARED_DATA / "corpus" / "statutes" / "民法商法")
    packing.prepare(corpus, CLEANING, 10, tokenizer, 64, tmp_path / "all", processes=2)
    index = packing.prepare(corpus, CLEANING, 10, tokenizer, 64, tmp_path / "heldout", splits=("heldout",), processes=2)
    full = packing.load(tmp_path / "all", 64)[1]
    assert index["splits"]["train"]["blocks"] == 0
    assert index["splits"]["heldout"]["blocks"] == len(full) > 50
    # Not the first five, all from the first document or two: five spread from start to end.
    some = packing.load(tmp_path / "heldout", 64, heldout_limit=5)[1]
    spread = [i * len(full) // 5 for i in range(5)]
    assert len(some) == 5 and np.array_equal(some.rows(0, 5), np.stack([full.row(i) for i in spread]))
    assert spread[-1] > len(full) * 3 // 4


def test_a_folder_without_its_index_or_with_a_short_shard_is_refused(tokenizer, tmp_path):
    corpus = _corpus(tmp_path / "corpus", _names(False, 3) + _names(True, 1))
    packing.prepare(str(corpus), CLEANING, 10, tokenizer, 32, tmp_path / "blocks")
    with pytest.raises(RuntimeError, match="32 tokens a block; this trainer needs format 1 with 4"):
        packing.load(tmp_path / "blocks", 4)
    shard = next((tmp_path / "blocks").glob("train-*.bin"))
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(RuntimeError, match="bytes, its index says"):
        packing.load(tmp_path / "blocks", 32)
    (tmp_path / "blocks" / packing.INDEX_FILE).unlink()
    with pytest.raises(RuntimeError, match="incomplete"):
        packing.load(tmp_path / "blocks", 32)


def test_a_file_that_is_not_utf8_is_named_even_from_a_worker(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(packing, "TASK_BYTES", 1)
    corpus = _corpus(tmp_path / "corpus", _names(False, 3))
    (corpus / "broken.md").write_bytes("民法典".encode("gbk") * 100)
    with pytest.raises(InvalidInput, match="broken.md: not UTF-8"):
        packing.prepare(str(corpus), CLEANING, 10, tokenizer, 32, tmp_path / "blocks", processes=2)
    # The workers finished what they had begun and left.
    assert multiprocessing.active_children() == []


def test_a_worker_that_dies_fails_the_preparation_instead_of_hanging_it(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(packing, "TASK_BYTES", 1)
    corpus = _corpus(tmp_path / "corpus", _names(False, 6))
    prepare_file = packing._prepare_file

    def dies_on_the_third(source, want):
        if source.path.name == sorted(p.name for p in corpus.iterdir())[2]:
            os._exit(9)  # as the kernel's OOM killer would end it
        return prepare_file(source, want)

    # Forked workers inherit the patch.
    monkeypatch.setattr(packing, "_prepare_file", dies_on_the_third)
    with pytest.raises(RuntimeError, match="worker died") as failed:
        packing.prepare(str(corpus), CLEANING, 10, tokenizer, 32, tmp_path / "blocks", processes=2)
    assert isinstance(failed.value.__cause__, BrokenProcessPool)
    assert multiprocessing.active_children() == []


def test_a_corpus_file_that_is_one_50mb_line_is_named_or_skipped_and_counted(tokenizer, tmp_path):
    corpus = _corpus(tmp_path / "corpus", _names(False, 3) + _names(True, 1))
    (corpus / "dump.txt").write_text("法" * (50_000_000 // 3), "utf-8")
    with pytest.raises(InvalidInput, match=r"dump.txt:1: a line of 16,666,666 characters, over data.max_line_chars \(100,000\)"):
        packing.prepare(str(corpus), CLEANING, 10, tokenizer, 32, tmp_path / "failed", processes=2, bad=data.BadRecords("fail", 100_000))
    bad = data.BadRecords("skip", 100_000)
    index = packing.prepare(str(corpus), CLEANING, 10, tokenizer, 32, tmp_path / "blocks", processes=2, bad=bad)
    assert bad.count == 1
    assert index["report"]["skipped_records"] == 1
    assert index["report"]["corpus_documents"] == 4
    assert prepared_blocks(tmp_path / "blocks", 32)["train"].shape[0] > 0


def test_a_corpus_with_nothing_but_blank_files_says_so(tokenizer, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("a.md", "b.txt"):
        (corpus / name).write_text(" \n\n", "utf-8")
    with pytest.raises(InvalidInput, match=r"corpus .*corpus has no text: its 2 files are blank or unreadable"):
        packing.prepare(str(corpus), CLEANING, 10, tokenizer, 32, tmp_path / "blocks", processes=1)
