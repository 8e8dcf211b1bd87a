"""Data rank 0 prepares once for every rank: the waiting (rank_zero), and sft's encoded samples."""

import threading
import time

import numpy as np
import pytest

from lawgpt_trainer import encoded_samples, rank_zero
from lawgpt_trainer.errors import InvalidInput
from lawgpt_trainer.prompt import IGNORE_INDEX


def test_ranks_waiting_give_up_when_rank_0_fails(tmp_path):
    folder = tmp_path / "blocks"

    def prepare():
        raise ValueError("corpus unreadable")

    with pytest.raises(ValueError, match="corpus unreadable"):
        rank_zero.prepare_for_every_rank(folder, prepare)
    with pytest.raises(RuntimeError, match=r"rank 0 failed to prepare the blocks \(ValueError: corpus unreadable\)"):
        rank_zero.wait_for_rank_0(folder, "index.json", "the blocks")


def test_ranks_waiting_fail_as_invalid_input_when_rank_0_refused_its_input(tmp_path):
    folder = tmp_path / "samples"

    def prepare():
        raise InvalidInput("dialogue.jsonl:4: field 'answers' must be a non-empty list")

    with pytest.raises(InvalidInput):
        rank_zero.prepare_for_every_rank(folder, prepare)
    with pytest.raises(InvalidInput, match=r"rank 0 failed to prepare the samples \(InvalidInput: dialogue.jsonl:4: field"):
        rank_zero.wait_for_rank_0(folder, "index.json", "the samples")


def test_ranks_waiting_give_up_when_rank_0_goes_silent(tmp_path, monkeypatch):
    monkeypatch.setattr(rank_zero, "SILENCE_SECONDS", 0.5)
    monkeypatch.setattr(rank_zero, "FIRST_TOUCH_SECONDS", 1.5)
    folder = tmp_path / "samples"
    folder.mkdir()
    # Never heard from at all: the first touch's longer wait.
    with pytest.raises(RuntimeError, match="rank 0 has not been heard from in 1.5 s of preparing the samples"):
        rank_zero.wait_for_rank_0(folder, "index.json", "the samples")
    (folder / rank_zero.PREPARING_FILE).touch()
    with pytest.raises(RuntimeError, match="rank 0 has not been heard from in 0.5 s"):
        rank_zero.wait_for_rank_0(folder, "index.json", "the samples")
    # Heard from, then gone without a word, its beat with it (after the first look): the short wait still.
    sleep = time.sleep

    def beat_gone_after_first_look(seconds):
        (folder / rank_zero.PREPARING_FILE).unlink(missing_ok=True)
        sleep(seconds)

    (folder / rank_zero.PREPARING_FILE).touch()
    monkeypatch.setattr(rank_zero.time, "sleep", beat_gone_after_first_look)
    with pytest.raises(RuntimeError, match="rank 0 has not been heard from in 0.5 s"):
        rank_zero.wait_for_rank_0(folder, "index.json", "the samples")


def test_ranks_wait_as_long_as_rank_0_prepares(tmp_path, monkeypatch):
    monkeypatch.setattr(rank_zero, "BEAT_SECONDS", 0.1)
    monkeypatch.setattr(rank_zero, "SILENCE_SECONDS", 3)
    folder = tmp_path / "blocks"

    def prepare():
        time.sleep(4)
        (folder / "index.json").write_text("{}", "utf-8")

    rank_0 = threading.Thread(target=rank_zero.prepare_for_every_rank, args=(folder, prepare))
    rank_0.start()
    rank_zero.wait_for_rank_0(folder, "index.json", "the blocks")
    rank_0.join()
    # What the block cache is offered: the blocks alone.
    assert [p.name for p in folder.iterdir()] == ["index.json"]


def _sample(n: int, prompt: int) -> dict:
    return {"input_ids": list(range(100, 100 + n)), "labels": [IGNORE_INDEX] * prompt + list(range(100 + prompt, 100 + n))}


def test_samples_read_back_in_order_without_those_that_kept_no_response_token(tmp_path):
    written = [_sample(4, 2), _sample(3, 3), _sample(5, 1)]
    index = encoded_samples.write(iter(written), tmp_path / "samples", {"skipped_records": 2})
    assert index == {"samples": 2, "over_cutoff": 1, "tokens": 9, "skipped_records": 2}
    samples = encoded_samples.Samples(tmp_path / "samples")
    assert len(samples) == 2 and samples.index == index
    for item, expected in zip([samples[0], samples[1]], [written[0], written[2]]):
        assert {key: value.tolist() for key, value in item.items()} == expected
        assert item["input_ids"].dtype == np.int32
    with pytest.raises(IndexError):
        samples[2]


def test_packing_fills_sequences_up_to_the_cutoff_and_keeps_each_prompt_masked(tmp_path):
    written = [_sample(4, 2), _sample(5, 3), _sample(8, 1), _sample(2, 1), _sample(10, 9)]
    encoded_samples.write(written, tmp_path)
    packed = encoded_samples.Samples(tmp_path, pack_to=10)
    assert [len(packed[i]["input_ids"]) for i in range(len(packed))] == [9, 10, 10]
    assert np.concatenate([packed[i]["input_ids"] for i in range(len(packed))]).tolist() == sum((s["input_ids"] for s in written), [])
    assert packed[0]["labels"].tolist() == written[0]["labels"] + written[1]["labels"]
    assert len(encoded_samples.Samples(tmp_path)) == 5


def test_a_folder_of_no_sample_reads_as_empty(tmp_path):
    index = encoded_samples.write([_sample(3, 3)], tmp_path)
    assert index == {"samples": 0, "over_cutoff": 1, "tokens": 0}
    assert len(encoded_samples.Samples(tmp_path)) == 0 and len(encoded_samples.Samples(tmp_path, pack_to=8)) == 0
