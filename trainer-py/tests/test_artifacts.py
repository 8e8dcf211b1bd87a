"""A model or tokenizer input with files missing is refused before the stage starts, naming what is missing."""

import json

from conftest import CONFIGS, run_stage

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
