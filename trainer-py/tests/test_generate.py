"""generate: a person's way to try a trained model, merged or base + adapter."""

import os
import subprocess
import sys

from conftest import TRAINER_ROOT

from lawgpt_trainer import generate


def _run(*args, stdin=""):
    return subprocess.run(
        [sys.executable, "-m", "lawgpt_trainer.generate", *map(str, args)],
        input=stdin, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(TRAINER_ROOT)},
    )  # fmt: skip


def test_one_shot_answers_every_prompt(pipeline):
    result = _run("--model", pipeline["sft"].output_dir / "model", "--prompt", "借钱不还怎么办？", "--prompt", "离婚需要什么手续？", "--max-new-tokens", 5)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("问题: ") == 2 and result.stdout.count("回答: ") == 2
    assert "借钱不还怎么办？" in result.stdout


def test_interactive_reads_questions_until_an_empty_line(pipeline):
    result = _run("--model", pipeline["sft"].output_dir / "model", "--max-new-tokens", 3, stdin="合同无效的情形有哪些？\n\n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("回答: ") == 1


def test_base_plus_adapter_answers_like_the_merged_model(pipeline):
    question = "劳动合同到期不续签有补偿吗？"
    merged = generate.answer(*generate.load(pipeline["sft"].output_dir / "model"), question, 6, 0.0)
    unmerged = generate.answer(*generate.load(pipeline["pretrain"].output_dir / "model", pipeline["sft"].output_dir / "adapter"), question, 6, 0.0)
    assert merged == unmerged
