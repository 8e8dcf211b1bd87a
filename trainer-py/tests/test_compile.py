"""`compile`: the stages' training loop compiles one graph for all the decoder layers."""

import torch
from torch._dynamo.utils import counters
from transformers import LlamaConfig, LlamaForCausalLM

from conftest import train_in_process

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
