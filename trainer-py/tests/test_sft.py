"""sft: the loss covers the response only; LoRA yields an adapter and a merged model."""

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lawgpt_trainer import prompt
from lawgpt_trainer.data import Sample
from lawgpt_trainer.stages.sft import IGNORE_INDEX, encode, pad_collator


def test_prompt_tokens_are_masked_out_of_the_loss(pipeline):
    tokenizer = AutoTokenizer.from_pretrained(pipeline["vocab"].output_dir / "tokenizer")
    sample = Sample(instruction="朋友欠钱不还怎么办？", input="", output="可以向人民法院提起诉讼。")
    item = encode(tokenizer, sample, cutoff_len=512)
    prompt_len = 1 + len(tokenizer(prompt.render_prompt(sample.instruction), add_special_tokens=False)["input_ids"])
    assert item["labels"][:prompt_len] == [IGNORE_INDEX] * prompt_len
    assert item["labels"][prompt_len:] == item["input_ids"][prompt_len:]
    assert item["input_ids"][-1] == tokenizer.eos_token_id
    response = tokenizer.decode(item["input_ids"][prompt_len:], skip_special_tokens=True)
    assert response.strip() == sample.output


def test_cutoff_keeps_labels_aligned(pipeline):
    tokenizer = AutoTokenizer.from_pretrained(pipeline["vocab"].output_dir / "tokenizer")
    item = encode(tokenizer, Sample("问" * 50, "", "答" * 50), cutoff_len=40)
    assert len(item["input_ids"]) == len(item["labels"]) == 40


def test_padding_is_masked_too():
    batch = pad_collator(0)([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [5], "labels": [5]}])
    assert batch["labels"].tolist() == [[-100, 6, 7], [5, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_adapter_and_merged_model_are_written(pipeline):
    out = pipeline["sft"].output_dir
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and set(adapter["target_modules"]) == {"q_proj", "v_proj"}
    merged = AutoModelForCausalLM.from_pretrained(out / "model")
    assert not any("lora" in name for name, _ in merged.named_parameters())
    pretrained = AutoModelForCausalLM.from_pretrained(pipeline["pretrain"].output_dir / "model")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged.state_dict()[name], pretrained.state_dict()[name])
    # LoRA leaves everything outside its target modules untouched.
    name = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(merged.state_dict()[name], pretrained.state_dict()[name])


def test_every_instruction_source_contributes_samples(pipeline, tiny_data):
    from lawgpt_trainer.stages.sft import samples

    config = {"dialogue_answers": "first", "max_dialogue_records": 5, "max_exam_records": 5, "max_instruction_records": 5}
    request = {"config": config, "split": {"heldout_percent": 20}, "inputs": {k: str(tiny_data[k]) for k in ("dialogue", "exam", "instructions")}}
    found = samples(request)
    assert len(found) == 15
    assert found[-1].output == json.loads(tiny_data["instructions"].read_text("utf-8").splitlines()[4])["output"]
    assert "请选出正确答案" in found[5].instruction


def test_instructions_alone_are_enough(pipeline, tiny_data, tmp_path):
    """BenTsao's recipe: Alpaca-shape QA only."""
    from conftest import run_stage

    run = run_stage("sft", {"model": pipeline["pretrain"].output_dir / "model", "instructions": tiny_data["medical"]}, tmp_path)
    assert run.completed()["metrics"]["train_samples"] > 0
