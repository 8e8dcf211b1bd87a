"""A model or tokenizer input with files missing is refused before the stage starts, naming what is missing."""

import json

import torch
from conftest import CONFIGS, run_stage
from transformers import AutoModelForCausalLM

from lawgpt_trainer import artifacts


def test_a_whole_model_folder_passes_and_each_missing_file_is_named(pipeline, tmp_path):
    model = pipeline["base"].output_dir / "model"
    assert artifacts.missing_files("model", model) == []
    assert artifacts.missing_files("tokenizer", pipeline["vocab"].output_dir / "tokenizer") == []
    empty = tmp_path / "empty"
    empty.mkdir()
    assert artifacts.missing_files("model", empty) == ["tokenizer.model", "config.json", "model.safetensors or pytorch_model.bin"]
    assert artifacts.missing_files("model", tmp_path / "absent") == ["the whole folder"]
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    for name in ("tokenizer.model", "config.json", "model-00001-of-00002.safetensors"):
        (sharded / name).write_bytes(b"x")
    (sharded / artifacts.SHARD_INDEX).write_text(json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    assert artifacts.missing_files("model", sharded) == ["model-00002-of-00002.safetensors"]


def test_a_model_in_sharded_bin_files_passes_as_transformers_loads_it(pipeline, tmp_path):
    """As the LLaMA-7B conversions of 2023 are stored: pytorch_model-0000N-of-0000M.bin and their index."""
    given = pipeline["base"].output_dir / "model"
    folder = tmp_path / "llama-bin"
    folder.mkdir()
    for name in ("config.json", "tokenizer.model"):
        (folder / name).write_bytes((given / name).read_bytes())
    weights = AutoModelForCausalLM.from_pretrained(given).state_dict()
    names = list(weights)
    shards = {"pytorch_model-00001-of-00002.bin": names[: len(names) // 2], "pytorch_model-00002-of-00002.bin": names[len(names) // 2 :]}
    for shard, held in shards.items():
        torch.save({name: weights[name].clone() for name in held}, folder / shard)
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {name: shard for shard, held in shards.items() for name in held}}))
    assert artifacts.missing_files("model", folder) == []
    assert torch.equal(AutoModelForCausalLM.from_pretrained(folder).lm_head.weight, weights["lm_head.weight"])
    (folder / "pytorch_model-00002-of-00002.bin").unlink()
    assert artifacts.missing_files("model", folder) == ["pytorch_model-00002-of-00002.bin"]


def test_pretrain_on_a_base_model_without_weights_fails_as_invalid_input_before_training(pipeline, tiny_data, tmp_path):
    broken = tmp_path / "base-model"
    broken.mkdir()
    for f in (pipeline["base"].output_dir / "model").iterdir():
        if f.name != "model.safetensors":
            (broken / f.name).write_bytes(f.read_bytes())
    inputs = {"corpus": tiny_data["corpus"], "tokenizer": pipeline["vocab"].output_dir / "tokenizer", "base_model": broken}
    run = run_stage("pretrain", inputs, tmp_path / "run", config=CONFIGS["pretrain"])
    assert run.returncode == 2
    assert run.events[-1]["message"] == f"input 'base_model' at {broken} is not a whole model folder: model.safetensors or pytorch_model.bin missing"
    assert not any(e["event"] == "progress" for e in run.events)
