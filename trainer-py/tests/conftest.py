"""Tiny inputs cut from ../shared/data, a helper that runs a stage through the real CLI, and one
that runs the stages' training loop in this process."""

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import pytest

from lawgpt_trainer import contract, training
from lawgpt_trainer.events import EventStream

TRAINER_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LAWGPT_SHARED_DATA", TRAINER_ROOT.parents[1] / "shared" / "data"))

TINY_MODEL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 256, "seed": 0}
LOOP = {"micro_batch_size": 2, "gradient_accumulation_steps": 1, "learning_rate": 1e-3, "warmup_steps": 0, "logging_steps": 1, "checkpoint_steps": 2, "seed": 7, "compile": False}
CLEANING = {"normalize_width": True, "min_chars": 20, "deduplicate": True}
RECORDS = {"on_bad_record": "fail", "max_line_chars": 100_000}
CONFIGS = {
    "base": {"tokenizer": "mistral_common:tokenizer.model.v1", **TINY_MODEL},
    "vocab": {"train_sentencepiece": True, "model_type": "bpe", "vocab_size": 2000, "character_coverage": 0.9995, "split_digits": True, "byte_fallback": True, "max_sentence_length": 4096, "input_sentence_size": 20000},
    "pretrain": {**LOOP, "max_steps": 4, "block_size": 64, "eval_blocks": 4, "method": "full", "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "modules_to_save": ["embed_tokens", "lm_head"]}},
    "sft": {**LOOP, "max_steps": 3, "cutoff_len": 96, "packing": False, "gradient_checkpointing": False, "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "modules_to_save": []}, "dialogue_answers": "first", "max_dialogue_records": 12, "max_exam_records": 12, "max_instruction_records": 12, "max_knowledge_records": 12},
    "eval": {"block_size": 64, "max_heldout_blocks": 4, "max_exam_questions": 4, "max_new_tokens": 4, "max_short_answers": 3, "short_answer_max_new_tokens": 12, "batch_size": 3},
}


@dataclass
class StageRun:
    returncode: int
    events: list[dict]
    stderr: str
    output_dir: Path

    def completed(self) -> dict:
        assert self.returncode == 0, self.stderr[-3000:]
        return next(e for e in self.events if e["event"] == "completed")


def write_request(
    stage: str,
    inputs: dict,
    work: Path,
    config: dict | None = None,
    split=None,
    resume_from: Path | None = None,
    inputs_hash: str | None = None,
    stop_file: Path | None = None,
    records: dict | None = None,
) -> Path:
    """`work`/request.json for one stage on these inputs, as the orchestrator writes it."""
    work.mkdir(parents=True, exist_ok=True)
    request = {
        "contract_version": contract.schema()["contract_version"],
        "stage": stage,
        "run_id": "pytest",
        "output_dir": str(work / "out"),
        "split": split or {"heldout_percent": 20},
        "cleaning": CLEANING,
        **(records or RECORDS),
        "inputs": {k: str(v) for k, v in inputs.items()},
        "config": config or CONFIGS[stage],
    }
    if resume_from:
        request["resume_from"] = str(resume_from)
    if inputs_hash:
        request["inputs_hash"] = inputs_hash
    if stop_file:
        request["stop_file"] = str(stop_file)
    (work / "request.json").write_text(json.dumps(request), "utf-8")
    return work / "request.json"


def trainer_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(TRAINER_ROOT)}


def train_in_process(model, dataset, vocab: int, work: Path, monkeypatch, compile: bool = False) -> tuple[dict, list[dict]]:
    """Runs training.train, the stages' loop, for 2 steps of 2 samples in this process, without
    DeepSpeed; returns what it trained and the events it wrote."""
    config = {
        "max_steps": 2, "micro_batch_size": 2, "gradient_accumulation_steps": 1, "learning_rate": 1e-3, "warmup_steps": 0,
        "logging_steps": 1, "checkpoint_steps": 100, "seed": 0, "compile": compile,
    }  # fmt: skip
    request = {"run_id": "in-process", "stage": "pretrain", "config": config, "output_dir": str(work)}
    out = io.StringIO()
    # The stage sets these for its own process; this one goes on to fork pool workers that must
    # still die on SIGTERM (packing's), and to other tests.
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(work))
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        _, trained = training.train(model, training.arguments(request, evaluates=False, deepspeed=None), dataset, None, request, EventStream(out), vocab, compile=compile)
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    return trained, [json.loads(line) for line in out.getvalue().splitlines()]


def run_stage(stage: str, inputs: dict, work: Path, config: dict | None = None, **request) -> StageRun:
    """Runs `python -m lawgpt_trainer <stage>` as the orchestrator does; every stdout line must be
    a contract event. `request` takes write_request's other arguments."""
    write_request(stage, inputs, work, config, **request)
    config = config or CONFIGS[stage]
    env = trainer_env()
    command = [sys.executable, "-m", "lawgpt_trainer", stage, "--request", str(work / "request.json")]
    deepspeed = config.get("deepspeed")
    if deepspeed:
        # What activities/deepspeed-launch.ts starts for one host with several slots: DeepSpeed's
        # per-node launcher, given the host's devices as its runner would.
        [host] = deepspeed["hosts"]
        world = base64.urlsafe_b64encode(json.dumps({host["host"]: list(range(host["slots"]))}).encode()).decode()
        command = [sys.executable, "-u", "-m", "deepspeed.launcher.launch", f"--world_info={world}", f"--master_addr={deepspeed['master_addr']}",
                   f"--master_port={deepspeed['master_port']}", "--no_local_rank", "--log_level=warning", "--module", *command[2:]]
        env["DS_ACCELERATOR"] = "cpu"
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    # Under the launcher, stdout also carries its log lines; events are the JSON ones.
    events = [json.loads(line) for line in proc.stdout.splitlines() if not deepspeed or line.startswith("{")]
    for event in events:
        assert contract.problems("event", event) == [], event
    return StageRun(proc.returncode, events, proc.stderr, work / "out")


def _jsonl_head(source: Path, target: Path, lines: int) -> Path:
    with source.open(encoding="utf-8") as f:
        target.write_text("".join(islice(f, lines)), "utf-8")
    return target


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict:
    """A few statutes and cases, and the first records of the dialogue and exam files."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA} (set LAWGPT_SHARED_DATA)")
    root = tmp_path_factory.mktemp("data")
    statutes = sorted((SHARED_DATA / "corpus" / "statutes").rglob("*.md"))
    cases = sorted((SHARED_DATA / "corpus" / "cases").rglob("*.md"))
    picked = statutes[:: max(1, len(statutes) // 6)][:6] + cases[:2]
    for path in picked:
        target = root / "corpus" / path.relative_to(SHARED_DATA / "corpus")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text("utf-8")[:6000], "utf-8")
    return {
        "corpus": root / "corpus",
        "dialogue": _jsonl_head(SHARED_DATA / "dialogue" / "legal_consultation.jsonl", root / "dialogue.jsonl", 20),
        "multi_turn": SHARED_DATA / "dialogue" / "legal_consultation_multi_turn.jsonl",
        "exam": _jsonl_head(SHARED_DATA / "exam" / "disc_law_eval_mcq.jsonl", root / "exam.jsonl", 60),
        "short_answer": _jsonl_head(SHARED_DATA / "exam" / "disc_law_eval_short_answer.jsonl", root / "short_answer.jsonl", 10),
        "instructions": _jsonl_head(SHARED_DATA / "instructions" / "judicial_exam_reasoning.jsonl", root / "instructions.jsonl", 20),
        "medical": _jsonl_head(SHARED_DATA / "instructions" / "bentsao_llama_data.jsonl", root / "medical.jsonl", 20),
    }


@pytest.fixture(scope="session")
def pipeline(tiny_data, tmp_path_factory) -> dict:
    """Runs every stage once, in order, on the tiny inputs; tests inspect the results."""
    work = tmp_path_factory.mktemp("stages")
    runs = {}
    runs["base"] = run_stage("base", {}, work / "base")
    base_out = runs["base"].output_dir
    runs["vocab"] = run_stage("vocab", {"corpus": tiny_data["corpus"], "base_tokenizer": base_out / "tokenizer"}, work / "vocab")
    runs["pretrain"] = run_stage(
        "pretrain", {"corpus": tiny_data["corpus"], "tokenizer": runs["vocab"].output_dir / "tokenizer", "base_model": base_out / "model"}, work / "pretrain"
    )
    sft_data = {name: tiny_data[name] for name in ("dialogue", "exam", "instructions")}
    runs["sft"] = run_stage("sft", {"model": runs["pretrain"].output_dir / "model", **sft_data}, work / "sft")
    runs["eval"] = run_stage(
        "eval",
        {
            "model": runs["sft"].output_dir / "model",
            "corpus": tiny_data["corpus"],
            "exam": tiny_data["exam"],
            "short_answer": tiny_data["short_answer"],
            "base_model": base_out / "model",
            "pretrained_model": runs["pretrain"].output_dir / "model",
        },
        work / "eval",
    )
    yield runs
    shutil.rmtree(work, ignore_errors=True)
