"""P5, the trainer wrapper: steps per second of pretrain as the orchestrator runs it (the CLI, the
event stream, checkpoints handed over with their manifests hashed on a background thread, stop
checks after every step) against a bare Hugging Face Trainer on the same model, data and
arguments, saving checkpoints at the same steps. Both are timed over the training loop alone
(Trainer's train_runtime), held-out scoring off, alternating. Ours runs in a fresh interpreter each
time, as the orchestrator starts it; the bare peer in one interpreter that trains once per line on
its stdin, which spares two torch imports (the imports are outside the timing either way)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import fixtures


def bench_config(p: dict) -> dict:
    pretrain = {key: value for key, value in p["config"]["pretrain"].items() if key != "deepspeed"}
    return {**pretrain, "max_steps": 12 if p["quick"] else 200, "eval_blocks": 0, "logging_steps": 1, "global_batch_size": None}


def bare(params_file: str, base_model: str, tokenizer_dir: str, blocks_dir: str, out: str) -> float:
    """The plain recipe: resize, wrap in LoRA, train with Trainer; no callbacks of ours. Steps per second."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaForCausalLM, Trainer, TrainingArguments, default_data_collator

    from lawgpt_trainer import packing

    p = json.loads(Path(params_file).read_text("utf-8"))
    config = {k: v for k, v in bench_config(p).items() if v is not None}
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = LlamaForCausalLM.from_pretrained(base_model, attn_implementation="sdpa")
    model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    lora = config["lora"]
    model = get_peft_model(model, LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"], target_modules=lora["target_modules"], modules_to_save=lora["modules_to_save"] or None, task_type="CAUSAL_LM"))
    train = packing.load(Path(blocks_dir), config["block_size"])[0]
    rows = torch.from_numpy(train.rows(0, len(train)))
    dataset = [{"input_ids": r, "labels": r.clone(), "attention_mask": torch.ones_like(r)} for r in rows]
    args = TrainingArguments(
        output_dir=out, max_steps=config["max_steps"], per_device_train_batch_size=config["micro_batch_size"], gradient_accumulation_steps=config["gradient_accumulation_steps"],
        learning_rate=config["learning_rate"], warmup_steps=config["warmup_steps"], lr_scheduler_type="cosine", logging_steps=1, save_strategy="steps",
        save_steps=config["checkpoint_steps"], report_to=[], disable_tqdm=True, seed=config["seed"], data_seed=config["seed"], dataloader_num_workers=0,
        remove_unused_columns=False, max_grad_norm=1.0, use_cpu=True,
    )  # fmt: skip
    metrics = Trainer(model=model, args=args, train_dataset=dataset, data_collator=default_data_collator).train().metrics
    return config["max_steps"] / metrics["train_runtime"]


def serve_bare(params_file: str, base_model: str, tokenizer_dir: str, blocks_dir: str) -> None:
    """Trains once per stdin line (its output folder), answering steps/s as one JSON line on
    stdout; Trainer's own prints go to stderr, as the trainer's do."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in sys.stdin:
        answers.write(json.dumps({"steps_per_second": bare(params_file, base_model, tokenizer_dir, blocks_dir, line.strip())}) + "\n")


def main() -> None:
    p = fixtures.params()
    params_file = sys.argv[sys.argv.index("--params") + 1]
    work = Path(p["work"]) / "p5"
    tokenizer = fixtures.merged_tokenizer(p)
    base = fixtures.run_stage(p, "base", {}, work / "base")[0] / "model"
    config = {k: v for k, v in bench_config(p).items() if v is not None}
    inputs = {"corpus": fixtures.corpus(p) / "statutes" / "民法商法", "tokenizer": tokenizer, "base_model": base}
    ours, peer = [], []
    # The first run's blocks, which later runs take as from the block cache (only training is
    # timed), and which the bare trainer trains on too.
    blocks = work / "ours-0" / "out" / "blocks"
    peer_process = None
    try:
        for i in range(p["repeats"]):
            _, metrics = fixtures.run_stage(p, "pretrain", inputs, work / f"ours-{i}", config)
            inputs["blocks"] = blocks
            ours.append(metrics["train_steps_per_second"])
            if peer_process is None:
                command = [sys.executable, __file__, "--bare", params_file, str(base), str(tokenizer), str(blocks)]
                peer_process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            peer_process.stdin.write(f"{work / f'bare-{i}'}\n")
            peer_process.stdin.flush()
            answer = peer_process.stdout.readline()
            if not answer:
                raise RuntimeError(f"bare trainer exited with {peer_process.wait()}")
            peer.append(json.loads(answer)["steps_per_second"])
    finally:
        if peer_process:
            peer_process.stdin.close()
            peer_process.wait()
    fixtures.report(ours, peer, steps=config["max_steps"], checkpoint_steps=config["checkpoint_steps"], micro_batch_size=config["micro_batch_size"], block_size=config["block_size"])


if __name__ == "__main__":
    if sys.argv[1] == "--bare":
        serve_bare(*sys.argv[2:])
    else:
        main()
