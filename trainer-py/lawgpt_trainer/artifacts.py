"""Input artifacts checked whole before a stage starts: a model or tokenizer folder with files
missing (an interrupted copy, a wrong prefix) is refused naming what is missing, instead of
failing deep inside transformers, or after hours of tokenizing."""

import json
from pathlib import Path

from lawgpt_trainer import contract
from lawgpt_trainer.errors import InvalidInput
from lawgpt_trainer.tokenizer import SP_FILE

# Inputs (contract stage_io names) that are model folders, and that are tokenizer folders.
MODEL_INPUTS = ("base_model", "model", "pretrained_model")
TOKENIZER_INPUTS = tuple(contract.schema()["tokenizer_inputs"])
WEIGHTS = ("model.safetensors", "pytorch_model.bin")
# The index of sharded weights this project writes, and the one of sharded .bin weights, which
# transformers loads too: the LLaMA-7B conversions and Chinese-LLaMA merges of 2023 are stored so.
SHARD_INDEX = "model.safetensors.index.json"
SHARD_INDEXES = (SHARD_INDEX, "pytorch_model.bin.index.json")


def _missing_weights(folder: Path) -> list[str]:
    for index in (folder / name for name in SHARD_INDEXES):
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text("utf-8"))["weight_map"].values()))
            return [s for s in shards if not (folder / s).is_file()]
    if any((folder / w).is_file() for w in WEIGHTS):
        return []
    return [" or ".join(WEIGHTS)]


def missing_files(kind: str, folder: Path) -> list[str]:
    """What a folder of this kind ("model" or "tokenizer") lacks to be loaded."""
    if not folder.is_dir():
        return ["the whole folder"]
    missing = [] if (folder / SP_FILE).is_file() else [SP_FILE]
    if kind == "tokenizer":
        return missing
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    return missing + _missing_weights(folder)


def check_inputs(request: dict) -> None:
    for name, path in request["inputs"].items():
        kind = "model" if name in MODEL_INPUTS else "tokenizer" if name in TOKENIZER_INPUTS else None
        missing = missing_files(kind, Path(path)) if kind else []
        if missing:
            raise InvalidInput(f"input '{name}' at {path} is not a whole {kind} folder: {', '.join(missing)} missing")
