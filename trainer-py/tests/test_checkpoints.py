"""Checkpoints: handed over with a manifest, resumed exactly, refused when they do not fit."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from transformers import LlamaForCausalLM

from lawgpt_trainer import checkpoints, contract, fingerprint, training

from conftest import CLEANING, CONFIGS, RECORDS, TRAINER_ROOT, run_stage


def _checkpoint_events(run):
    return [e for e in run.events if e["event"] == "checkpoint"]


def _pretrain_inputs(pipeline, tiny_data):
    return {"corpus": tiny_data["corpus"], "tokenizer": pipeline["vocab"].output_dir / "tokenizer", "base_model": pipeline["base"].output_dir / "model"}


def test_every_checkpoint_is_reported_with_a_manifest_that_matches_its_files(pipeline):
    run = pipeline["pretrain"]
    events = _checkpoint_events(run)
    assert [e["step"] for e in events] == [2, 4]
    for event in events:
        folder = run.output_dir / event["path"]
        manifest = json.loads((folder / "manifest.json").read_text())
        assert contract.problems("manifest", manifest) == []
        assert (manifest["stage"], manifest["step"], manifest["world_size"]) == ("pretrain", event["step"], 1)
        assert manifest["eval_loss"] > 0
        # What writing it cost the training, which went on while the manifest was hashed.
        assert 0 < event["save_seconds"] < run.completed()["metrics"]["train_seconds"]
        # One trainer identity: the one the stage cache keys on, and the one the trainer announced.
        assert manifest["trainer_version"] == fingerprint() == run.events[0]["trainer_version"]
        listed = {f["path"]: f for f in manifest["files"]}
        on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json"}
        assert set(listed) == on_disk and "trainer_state.json" in on_disk
        for path, entry in listed.items():
            content = (folder / path).read_bytes()
            assert (len(content), hashlib.sha256(content).hexdigest()) == (entry["size"], entry["sha256"])


def test_checkpoint_events_come_after_the_step_they_save(pipeline):
    order = [(e["event"], e.get("step")) for e in pipeline["pretrain"].events if e["event"] in ("progress", "checkpoint")]
    assert order.index(("checkpoint", 2)) > order.index(("progress", 2))


def test_resume_reproduces_the_uninterrupted_losses_and_weights(pipeline, tiny_data, tmp_path):
    full = pipeline["pretrain"]
    checkpoint = full.output_dir / _checkpoint_events(full)[0]["path"]
    resumed = run_stage("pretrain", _pretrain_inputs(pipeline, tiny_data), tmp_path, resume_from=checkpoint)

    losses = lambda run: {e["step"]: e["loss"] for e in run.events if e["event"] == "progress"}  # noqa: E731
    after = losses(resumed)
    assert sorted(after) == [3, 4]
    for step, loss in after.items():
        assert abs(loss - losses(full)[step]) <= 1e-6, (step, loss, losses(full)[step])
    assert resumed.completed()["metrics"]["resumed_from_step"] == 2

    a = LlamaForCausalLM.from_pretrained(full.output_dir / "model").state_dict()
    b = LlamaForCausalLM.from_pretrained(resumed.output_dir / "model").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_resume_under_another_config_is_refused(pipeline, tiny_data, tmp_path):
    full = pipeline["pretrain"]
    checkpoint = full.output_dir / _checkpoint_events(full)[0]["path"]
    config = {**CONFIGS["pretrain"], "learning_rate": 5e-4}
    run = run_stage("pretrain", _pretrain_inputs(pipeline, tiny_data), tmp_path, config=config, resume_from=checkpoint)
    assert run.returncode == 2
    assert "cannot resume from checkpoint-2: config_hash is" in run.events[-1]["message"]


def test_resume_with_other_inputs_is_refused(pipeline, tiny_data, tmp_path):
    first = run_stage("pretrain", _pretrain_inputs(pipeline, tiny_data), tmp_path / "a", inputs_hash="base-model-A")
    checkpoint = first.output_dir / _checkpoint_events(first)[0]["path"]
    run = run_stage("pretrain", _pretrain_inputs(pipeline, tiny_data), tmp_path / "b", resume_from=checkpoint, inputs_hash="base-model-B")
    assert run.returncode == 2
    assert "inputs_hash is 'base-model-A' there, 'base-model-B' here" in run.events[-1]["message"]


def test_sigterm_saves_a_checkpoint_and_stops(pipeline, tiny_data, tmp_path):
    request = {
        "contract_version": contract.schema()["contract_version"], "stage": "pretrain", "run_id": "pytest", "output_dir": str(tmp_path / "out"), "split": {"heldout_percent": 20}, "cleaning": CLEANING, **RECORDS,
        "inputs": {k: str(v) for k, v in _pretrain_inputs(pipeline, tiny_data).items()},
        "config": {**CONFIGS["pretrain"], "max_steps": 500, "checkpoint_steps": 1000},
    }  # fmt: skip
    (tmp_path / "request.json").write_text(json.dumps(request))
    proc = subprocess.Popen(
        [sys.executable, "-m", "lawgpt_trainer", "pretrain", "--request", str(tmp_path / "request.json")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONPATH": str(TRAINER_ROOT)},
    )  # fmt: skip
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == "progress" and events[-1]["step"] == 3:
            proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == contract.schema()["exit_interrupted"] == 128 + signal.SIGTERM
    checkpoint = next(e for e in events if e["event"] == "checkpoint")
    assert 3 <= checkpoint["step"] < 500
    assert (tmp_path / "out" / checkpoint["path"] / "manifest.json").is_file()
    assert events[-1]["event"] == "failed" and events[-1]["kind"] == "interrupted"


def test_resume_from_another_trainer_version_goes_ahead_and_says_so(pipeline, tiny_data, tmp_path):
    """Resuming after a fix to the trainer is what resume is for; the log names both versions."""
    full = pipeline["pretrain"]
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(full.output_dir / _checkpoint_events(full)[0]["path"], checkpoint)
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    (checkpoint / "manifest.json").write_text(json.dumps({**manifest, "trainer_version": "0.0.9+0123456789abcdef"}))
    run = run_stage("pretrain", _pretrain_inputs(pipeline, tiny_data), tmp_path / "resumed", resume_from=checkpoint)
    assert run.completed()["metrics"]["resumed_from_step"] == 2
    warnings = [e["message"] for e in run.events if e["event"] == "log" and e["level"] == "warning"]
    assert f"checkpoint-2 was written by trainer 0.0.9+0123456789abcdef, this is {fingerprint()}" in warnings


def test_the_zero_stage_a_checkpoint_was_written_under_is_read_only_when_its_manifest_says_one(tmp_path):
    for written, read in (({"zero_stage": 2}, 2), ({"zero_stage": 0}, 0), ({}, None), ({"zero_stage": "auto"}, None), ({"zero_stage": 5}, None), ({"zero_stage": True}, None)):
        (tmp_path / "manifest.json").write_text(json.dumps(written))
        assert checkpoints.written_zero_stage(str(tmp_path)) == read, written
    (tmp_path / "manifest.json").write_text("[1,")
    assert checkpoints.written_zero_stage(str(tmp_path)) is None
    assert checkpoints.written_zero_stage(str(tmp_path / "absent")) is None


def test_a_manifest_waits_for_the_files_other_ranks_wrote_and_refuses_without_them(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoint-4"
    folder.mkdir()
    (folder / "rng_state_0.pth").write_bytes(b"0")
    request = {"run_id": "r", "stage": "pretrain", "config": {}}
    # Rank 1's file shows up here a moment after rank 1 said it wrote it, as on a shared filesystem.
    threading.Timer(1.5, lambda: (folder / "rng_state_1.pth").write_bytes(b"1")).start()
    manifest = checkpoints.write_manifest(folder, ["rng_state_1.pth", "rng_state_0.pth"], request, 4, world_size=2, vocab_size=10)
    assert [f["path"] for f in manifest["files"]] == ["rng_state_0.pth", "rng_state_1.pth"]
    monkeypatch.setattr(checkpoints, "VISIBLE_WITHIN_SECONDS", 0.5)
    with pytest.raises(RuntimeError, match=r"not here after 0.5 s, e.g. \['zero_pp_rank_1_mp_rank_00_optim_states.pt'\]"):
        checkpoints.write_manifest(folder, ["rng_state_0.pth", "zero_pp_rank_1_mp_rank_00_optim_states.pt"], request, 4, world_size=2, vocab_size=10)


def test_a_failed_commit_is_raised_once_every_later_one_is_done():
    # A rank exits right after: a later checkpoint still being hashed would be lost.
    handoff = training.CheckpointHandoff(events=None, request={}, vocab_size=1)
    committed = []

    def fails():
        raise RuntimeError("checkpoint-2: files other ranks wrote are not here")

    def commits():
        time.sleep(0.5)
        committed.append(4)

    handoff.pending += [handoff.pool.submit(fails), handoff.pool.submit(commits)]
    with pytest.raises(RuntimeError, match="checkpoint-2"):
        handoff.wait()
    assert committed == [4]
