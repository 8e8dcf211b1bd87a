"""The command line side of the contract: exit codes and events for requests the trainer must refuse."""

import json
import signal
import subprocess
import sys
import time

from lawgpt_trainer import contract

from conftest import CONFIGS, TRAINER_ROOT, run_stage, trainer_env, write_request


def test_a_rank_exits_with_its_stage_code_whatever_the_teardown_would_do(tmp_path):
    # gloo's threads outlive a DeepSpeed rank's process group, and tearing them down at exit once
    # aborted a completed rank (exit 250). An abort registered for exit stands in for that here.
    (tmp_path / "request.json").write_text("{}")
    script = "import atexit, os, runpy, sys; atexit.register(os.abort); sys.argv[0] = 'lawgpt_trainer'; runpy.run_module('lawgpt_trainer', run_name='__main__')"

    def run(env: dict) -> subprocess.CompletedProcess:
        command = [sys.executable, "-c", script, "pretrain", "--request", str(tmp_path / "request.json")]
        return subprocess.run(command, capture_output=True, text=True, env={**trainer_env(), **env}, timeout=120)

    rank = run({"WORLD_SIZE": "1", "RANK": "0"})
    assert rank.returncode == contract.exit_invalid_input(), rank.stderr[-2000:]
    assert json.loads(rank.stdout.splitlines()[-1])["event"] == "failed"
    assert run({}).returncode == -signal.SIGABRT  # a plain process still goes through the teardown


def test_a_stage_process_leaves_out_libraries_it_never_uses(tmp_path):
    # The stage's code is imported first (--wait-for-request), then the request is refused; by then
    # transformers' Trainer has looked for datasets, which is installed here for the bench's peer.
    import importlib.util

    from lawgpt_trainer.cli import UNUSED_LIBRARIES

    assert all(importlib.util.find_spec(name) for name in UNUSED_LIBRARIES)
    (tmp_path / "request.json").write_text("{}")
    report = "import atexit, sys; atexit.register(lambda: print('loaded:', [m for m in ('datasets', 'pandas', 'pyarrow', 'transformers.trainer') if sys.modules.get(m)], file=sys.stderr))"
    script = f"{report}; import runpy; sys.argv[0] = 'lawgpt_trainer'; runpy.run_module('lawgpt_trainer', run_name='__main__')"
    command = [sys.executable, "-c", script, "pretrain", "--request", str(tmp_path / "request.json"), "--wait-for-request"]
    run = subprocess.run(command, capture_output=True, text=True, env=trainer_env(), timeout=120)
    assert run.returncode == contract.exit_invalid_input(), run.stderr[-2000:]
    assert "loaded: ['transformers.trainer']" in run.stderr


def test_contract_names_the_same_stages_as_the_cli():
    from lawgpt_trainer.cli import STAGES

    assert STAGES == ("base", "vocab", "pretrain", "sft", "eval")
    assert contract.schema()["stage_io"]["pretrain"]["inputs"] == ["corpus", "tokenizer", "base_model"]


def test_cached_blocks_may_stand_in_for_the_pretrain_corpus_but_not_nothing(tmp_path):
    def problems(inputs):
        return contract.problems("request", json.loads(write_request("pretrain", inputs, tmp_path).read_text("utf-8")))

    models = {"tokenizer": tmp_path, "base_model": tmp_path}
    assert problems({**models, "corpus": tmp_path}) == []
    assert problems({**models, "blocks": tmp_path}) == []
    assert problems(models) == ["inputs: 'blocks' is a required property or 'corpus' is a required property"]


def test_invalid_request_exits_with_the_invalid_input_code(tmp_path):
    bad = {**CONFIGS["pretrain"], "max_steps": 0, "surprise": True}
    run = run_stage("pretrain", {"corpus": tmp_path, "tokenizer": tmp_path}, tmp_path / "w", config=bad)
    assert run.returncode == contract.exit_invalid_input() == 2
    failed = run.events[-1]
    assert failed["event"] == "failed" and failed["kind"] == "invalid_input"
    for field in ("inputs", "config.max_steps", "config"):
        assert field in failed["message"]
    assert "surprise" in failed["message"] and "base_model" in failed["message"]


def test_bad_data_is_invalid_input_naming_the_line(tmp_path, pipeline):
    exam = tmp_path / "exam.jsonl"
    exam.write_text(json.dumps({"question": "问", "options": {"A": "甲"}, "answer": "Z"}) + "\n", "utf-8")
    run = run_stage("sft", {"model": pipeline["pretrain"].output_dir / "model", "dialogue": exam, "exam": exam}, tmp_path / "w")
    assert run.returncode == 2
    assert "exam.jsonl:1" in run.events[-1]["message"]


def test_a_vocabulary_too_small_for_the_corpus_is_named(tmp_path, tiny_data, pipeline):
    config = {**CONFIGS["vocab"], "vocab_size": 50}
    run = run_stage("vocab", {"corpus": tiny_data["corpus"], "base_tokenizer": pipeline["base"].output_dir / "tokenizer"}, tmp_path / "w", config=config)
    assert run.returncode == 2
    assert "vocab.vocab_size=50" in run.events[-1]["message"]


def test_a_trainer_told_to_wait_runs_once_its_request_is_renamed_into_place(tmp_path):
    # What runStage does: start the trainer, download the inputs meanwhile, then rename the request in.
    request = write_request("base", {}, tmp_path)
    pending = request.rename(tmp_path / "request.json.part")
    trainer = subprocess.Popen(
        [sys.executable, "-m", "lawgpt_trainer", "base", "--request", str(request), "--wait-for-request"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=trainer_env(),
    )
    try:
        time.sleep(3)
        assert trainer.poll() is None, "a trainer without its request must wait, not fail"
        pending.rename(request)
        stdout, stderr = trainer.communicate(timeout=300)
    finally:
        trainer.kill()
    assert trainer.returncode == 0, stderr[-3000:]
    events = [json.loads(line) for line in stdout.splitlines()]
    assert [events[0]["event"], events[-1]["event"]] == ["started", "completed"]


def test_stdout_carries_only_contract_events(pipeline):
    for run in pipeline.values():
        assert run.events[0]["event"] == "started"
        assert run.events[-1]["event"] == "completed"


def test_fingerprint_changes_with_the_code(tmp_path, monkeypatch):
    import shutil

    import lawgpt_trainer

    copy = tmp_path / "lawgpt_trainer"
    shutil.copytree(TRAINER_ROOT / "lawgpt_trainer", copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(lawgpt_trainer, "__file__", str(copy / "__init__.py"))
    before = lawgpt_trainer.fingerprint()
    (copy / "stages" / "pretrain.py").write_text((copy / "stages" / "pretrain.py").read_text() + "\n# changed\n")
    assert lawgpt_trainer.fingerprint() != before
    assert before.startswith(lawgpt_trainer.__version__ + "+")
