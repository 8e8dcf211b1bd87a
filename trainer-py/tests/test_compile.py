"""`compile`: the stages' training loop compiles one graph for all the decoder layers, and the
compile cache hands what one attempt compiled to the next."""

import platform
import shutil

import torch
from torch._dynamo.utils import counters
from transformers import LlamaConfig, LlamaForCausalLM

from conftest import CONFIGS, run_stage, train_in_process
from lawgpt_trainer import compile_cache

VOCAB = 300


def test_every_decoder_layer_runs_the_graph_compiled_for_the_first(monkeypatch, tmp_path):
    """The layers are the same code on weights of the same shapes, so the first layer's graph serves
    them all. That holds because the Trainer turns LLaMA's KV cache off for training
    (TrainingArguments.use_cache, false by default): with it on, each layer writes its own slot of
    the cache, which the graph guards on, and torch.compile compiled every layer again and left
    those past its limit of 8 eager (measured on 12 layers of width 256: 8 graphs, and a first step
    of 34 s on this CPU instead of 20 s)."""
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=2, vocab_size=VOCAB))
    ids = torch.randint(0, VOCAB, (4, 16), generator=torch.Generator().manual_seed(1))
    trained, _ = train_in_process(model, [{"input_ids": i, "labels": i} for i in ids], VOCAB, tmp_path, monkeypatch, compile=True)
    assert trained["compiled_layers"] == 3
    assert counters["stats"]["unique_graphs"] == 1


def test_a_fresh_worker_compiles_nothing_that_earlier_attempts_offered(pipeline, tmp_path, monkeypatch):
    """pretrain offers what it compiled, training's graphs after the first step and evaluation's
    after the held-out loss it scores once training is done, as parts named for its torch build and
    device; a run given them, on a worker whose inductor cache is empty, finds every graph there
    and offers nothing new. Parts of another kind are not its to load, and one it cannot read is
    left out with a warning."""
    first_run = pipeline["pretrain"]
    blocks = first_run.output_dir / next(e for e in first_run.events if e["event"] == "blocks")["path"]
    inputs = {"corpus": tmp_path / "no-corpus", "tokenizer": pipeline["vocab"].output_dir / "tokenizer", "base_model": pipeline["base"].output_dir / "model", "blocks": blocks}
    config = {**CONFIGS["pretrain"], "compile": True, "max_steps": 2, "checkpoint_steps": 1000}
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor-first"))
    first = run_stage("pretrain", inputs, tmp_path / "first", config)
    metrics = first.completed()["metrics"]
    assert (metrics["compile_cache_hits"], metrics["compile_cache_misses"]) == (0, 3)  # forward, backward, evaluation
    offered = [first.output_dir / e["path"] for e in first.events if e["event"] == "compile_cache"]
    kind = f"torch-{torch.__version__}-cpu-{platform.machine()}"
    assert len(set(offered)) == 2
    assert all(p.name.startswith(f"{kind}.") and p.is_file() for p in offered)

    cache = tmp_path / "compile-cache"
    cache.mkdir()
    for part in offered:
        shutil.copy(part, cache / part.name)
    shutil.copy(offered[0], cache / "torch-2.15.0+cu132-NVIDIA-H200-sm90.0123456789abcdef.bin")
    (cache / f"{kind}.unreadable.bin").write_bytes(b"not a cache")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor-second"))
    second = run_stage("pretrain", {**inputs, "compile_cache": cache}, tmp_path / "second", config)
    metrics = second.completed()["metrics"]
    assert (metrics["compile_cache_hits"], metrics["compile_cache_misses"]) == (3, 0)
    assert not any(e["event"] == "compile_cache" for e in second.events)
    said = {e["level"]: e["message"] for e in second.events if e["event"] == "log" and e["message"].startswith("compile cache:")}
    assert said["warning"] == f"compile cache: part {kind}.unreadable.bin left out (torch could not read it)"
    assert said["info"].endswith(f"in 2 parts loaded for {kind}")


def test_parts_are_named_for_the_torch_build_and_the_card_that_compiled_them(monkeypatch):
    """Kernels compiled for one card's architecture do not run on another's, so an H200's parts
    and a V100's in the same cache folder are told apart by name (a worker loads its own kind's)."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: {1: "NVIDIA H200", 2: "Tesla V100-SXM2-32GB"}[device.index])
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: {1: (9, 0), 2: (7, 0)}[device.index])
    monkeypatch.setattr(torch, "__version__", "2.15.0+cu132")
    assert compile_cache.device_kind(torch.device("cuda", 1)) == "torch-2.15.0+cu132-NVIDIA-H200-sm90"
    assert compile_cache.device_kind(torch.device("cuda", 2)) == "torch-2.15.0+cu132-Tesla-V100-SXM2-32GB-sm70"
    assert compile_cache.device_kind(torch.device("cpu")) == f"torch-2.15.0+cu132-cpu-{platform.machine()}"
