"""pretrain: the base model, resized to the merged vocabulary, loads and trains."""

import math

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from conftest import CONFIGS


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
