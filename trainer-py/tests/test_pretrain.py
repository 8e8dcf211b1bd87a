"""pretrain: the base model, resized to the merged vocabulary, loads and trains."""

import math
import time
from types import SimpleNamespace

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, TrainerCallback, TrainingArguments

import pytest

from conftest import CONFIGS, run_stage


def test_resized_model_covers_the_merged_vocabulary(pipeline):
    folder = pipeline["pretrain"].output_dir / "model"
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows >= len(tokenizer) > 32000
    assert rows % 64 == 0
    assert model.get_output_embeddings().weight.shape[0] == rows


def test_training_reports_every_step_with_a_finite_loss(pipeline):
    progress = [e for e in pipeline["pretrain"].events if e["event"] == "progress"]
    steps = CONFIGS["pretrain"]["max_steps"]
    assert [e["step"] for e in progress] == list(range(1, steps + 1))
    assert all(e["total_steps"] == steps and math.isfinite(e["loss"]) for e in progress)


def test_the_stage_reports_what_it_cost(pipeline):
    config, metrics = CONFIGS["pretrain"], pipeline["pretrain"].completed()["metrics"]
    # One process on this machine's CPU; every step a micro-batch of full blocks.
    assert metrics["processes"] == 1 and metrics["on_gpu"] == 0
    assert metrics["train_tokens"] == config["max_steps"] * config["micro_batch_size"] * config["gradient_accumulation_steps"] * config["block_size"]
    # fp32 on the CPU: no loss scaling, so no step is skipped for an overflow.
    assert metrics["overflow_skipped_steps"] == 0
    assert 0 < metrics["data_wait_seconds"] < metrics["train_seconds"]
    phases = [metrics[f"startup_{p}_seconds"] for p in ("imports", "data", "model", "engine", "first_step")]
    assert all(seconds > 0 for seconds in phases)
    assert metrics["seconds_to_first_step"] == pytest.approx(sum(phases))


def test_steps_that_fp16_overflow_skipped_are_counted():
    from lawgpt_trainer import training

    progress = training.ProgressEvents(events=None)
    # Accelerate's optimizer wrappers (DeepSpeed's among them) say whether the last step was skipped.
    for skipped in (True, False, True):
        progress.on_step_end(None, None, None, optimizer=SimpleNamespace(step_was_skipped=skipped))
    progress.on_step_end(None, None, None, optimizer=torch.optim.SGD([torch.zeros(1, requires_grad=True)]))
    assert progress.overflow_skipped == 2


@pytest.mark.parametrize("deepspeed,precision,name", [(None, {"fp16": True}, "adamw_torch"), ({"profile": "v100"}, {"fp16": True}, "adamw_torch_fused"), (None, {"bf16": True}, "adamw_torch_fused"), (None, {"use_cpu": True}, "adamw_torch_fused")])
def test_the_adamw_is_fused_except_under_one_process_fp16_scaler(deepspeed, precision, name):
    from lawgpt_trainer import training

    assert training.optimizer(deepspeed, precision) == name


def test_under_one_process_fp16_scaler_an_overflow_is_a_skipped_step_accelerate_sees(tmp_path):
    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer
    from transformers import Trainer

    from lawgpt_trainer import training

    # The Trainer's AdamW for that path, under accelerate's wrapper with a gradient scaler (the
    # CPU's, which works as the GPU's does), after gradients that overflowed.
    name = training.optimizer(None, {"fp16": True})
    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(TrainingArguments(output_dir=str(tmp_path), use_cpu=True, optim=name, report_to=[]))
    Accelerator(cpu=True)
    weight = torch.nn.Parameter(torch.ones(4))
    scaler = torch.amp.GradScaler("cpu")
    optimizer = AcceleratedOptimizer(cls([weight], **kwargs), device_placement=False, scaler=scaler)
    scaler.scale((weight * float("inf")).sum()).backward()
    optimizer.step()
    # ProgressEvents counts what step_was_skipped says: the fused kernel skips the update unseen
    # and says False.
    assert optimizer.step_was_skipped
    assert torch.equal(weight.detach(), torch.ones(4))


class SlowSamples(torch.utils.data.Dataset):
    reads = 0

    def __len__(self):
        return 8

    def __getitem__(self, i):
        self.reads += 1
        time.sleep(0.02)
        return {"input_ids": torch.arange(16), "labels": torch.arange(16)}


class SlowStepEnds(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(1)


def test_the_seconds_training_waited_for_its_batches_are_counted(tmp_path):
    from lawgpt_trainer import training

    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2))
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, max_steps=3, per_device_train_batch_size=2, gradient_accumulation_steps=2, report_to=[], save_strategy="no", disable_tqdm=True)
    samples = SlowSamples()
    trainer = training.BatchWaitTrainer(model=model, args=args, train_dataset=samples, callbacks=[SlowStepEnds()])
    trainer.train()
    # 3 steps of 2 micro-batches of 2 samples (and the batch accelerate reads ahead at an epoch's
    # end), each sample 20 ms to read; the 3 s the steps themselves took longer are not counted
    # (the margin is for a busy machine: npm test runs pytest beside vitest).
    assert samples.reads >= 12
    assert samples.reads * 0.02 <= trainer.data_wait_seconds < samples.reads * 0.02 + 2


def test_training_changes_the_base_weights(pipeline):
    base = LlamaForCausalLM.from_pretrained(pipeline["base"].output_dir / "model")
    trained = LlamaForCausalLM.from_pretrained(pipeline["pretrain"].output_dir / "model")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(base.state_dict()[name], trained.state_dict()[name])


def test_trained_model_generates_with_the_merged_tokenizer(pipeline):
    folder = pipeline["pretrain"].output_dir / "model"
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer("合同", return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.unk_token_id)
    assert out.shape[1] == ids.shape[1] + 3


def test_new_rows_start_from_the_base_pieces_that_spell_them(pipeline):
    import sentencepiece as spm

    from lawgpt_trainer import embeddings
    from lawgpt_trainer import tokenizer as tok

    base_dir = pipeline["base"].output_dir / "model"
    model = LlamaForCausalLM.from_pretrained(base_dir)
    matrices = lambda: [model.get_input_embeddings().weight, model.get_output_embeddings().weight]  # noqa: E731
    before = [weight.detach().clone() for weight in matrices()]
    tokenizer = AutoTokenizer.from_pretrained(pipeline["vocab"].output_dir / "tokenizer")
    base = spm.SentencePieceProcessor(model_file=str(base_dir / tok.SP_FILE))
    resized = embeddings.resize_from_base(model, tokenizer, base)

    new_id = next(i for i in range(32000, len(tokenizer)) if len(tokenizer.convert_ids_to_tokens(i)) >= 2)
    spelling = embeddings.base_spelling(base, tokenizer.convert_ids_to_tokens(new_id))
    assert base.decode(spelling) == tokenizer.convert_ids_to_tokens(new_id).replace("\u2581", " ").strip()
    for weight, old in zip(matrices(), before):
        assert torch.equal(weight[:32000], old)
        # Every new row, input and output alike, as the mean of its own spelling's rows.
        for i in range(32000, len(tokenizer)):
            spelling = embeddings.base_spelling(base, tokenizer.convert_ids_to_tokens(i)) or [base.unk_id()]
            assert torch.allclose(weight[i], old[spelling].mean(dim=0), atol=1e-6), i
        assert torch.allclose(weight[len(tokenizer) :], old.mean(dim=0).expand_as(weight[len(tokenizer) :]))
    assert resized["embedding_rows"] % 64 == 0
    assert resized["embedding_rows"] > len(tokenizer)  # the tiny merge leaves padding rows to check
    assert model.generation_config.suppress_tokens == list(range(len(tokenizer), resized["embedding_rows"]))


def test_padding_rows_are_never_generated(pipeline):
    folder = pipeline["pretrain"].output_dir / "model"
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows > len(tokenizer)
    assert model.generation_config.suppress_tokens == list(range(len(tokenizer), rows))
    # Make every padding row by far the likeliest next token: generation still never picks one.
    ids = tokenizer("合同", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hidden = model.model(ids).last_hidden_state[0, -1]
        model.lm_head.weight[len(tokenizer) :] = hidden * (1000 / hidden.dot(hidden))
    next_token = lambda: model.generate(ids, max_new_tokens=1, do_sample=False, pad_token_id=tokenizer.unk_token_id)[0, -1].item()  # noqa: E731
    assert next_token() < len(tokenizer)
    model.generation_config.suppress_tokens = None
    assert next_token() >= len(tokenizer)


def test_the_phase_reports_its_heldout_perplexity(pipeline):
    metrics = pipeline["pretrain"].completed()["metrics"]
    assert math.isfinite(metrics["heldout_loss"])
    assert metrics["heldout_perplexity"] == pytest.approx(math.exp(metrics["heldout_loss"]))


def test_epochs_decide_the_length_instead_of_max_steps(pipeline, tiny_data, tmp_path):
    config = {**CONFIGS["pretrain"], "epochs": 1, "max_steps": 1, "micro_batch_size": 8, "checkpoint_steps": 1000, "eval_blocks": 0}
    inputs = {"corpus": tiny_data["corpus"], "tokenizer": pipeline["vocab"].output_dir / "tokenizer", "base_model": pipeline["base"].output_dir / "model"}
    run = run_stage("pretrain", inputs, tmp_path, config)
    blocks = run.completed()["metrics"]["train_blocks"]
    steps = [e["step"] for e in run.events if e["event"] == "progress"]
    assert steps[-1] == math.ceil(blocks / 8) > 1


def test_tokenized_blocks_are_offered_to_the_cache_and_reused_without_tokenizing(pipeline, tmp_path):
    first = pipeline["pretrain"]
    offered = next(e for e in first.events if e["event"] == "blocks")
    inputs = {"corpus": tmp_path / "no-corpus", "tokenizer": pipeline["vocab"].output_dir / "tokenizer", "base_model": pipeline["base"].output_dir / "model", "blocks": first.output_dir / offered["path"]}
    # The corpus path does not even exist: everything comes from the blocks.
    again = run_stage("pretrain", inputs, tmp_path / "again")
    metrics, before = again.completed()["metrics"], first.completed()["metrics"]
    assert (metrics["blocks_from_cache"], before["blocks_from_cache"]) == (1, 0)
    for name in ("train_blocks", "corpus_documents", "first_loss", "heldout_loss"):
        assert metrics[name] == pytest.approx(before[name]), name
    assert not any(e["event"] == "blocks" for e in again.events)
