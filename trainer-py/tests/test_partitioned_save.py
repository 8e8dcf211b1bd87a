"""partitioned_save writes a ZeRO-3 model as save_pretrained writes the same model whole (the same
config, the same weights read back), while rank 0 holds a fraction of it on the host at a time,
where the Trainer's save would gather all of it there."""

import json
import socket
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import trainer_env

# One rank on the CPU: the model is saved whole (the reference), then ZeRO-3 partitions it.
SAVE = """
import ctypes, gc, json, pathlib, sys
import deepspeed, torch
from transformers import LlamaConfig, LlamaForCausalLM
from lawgpt_trainer import partitioned_save
out, tied = pathlib.Path(sys.argv[1]), sys.argv[2] == "tied"


class Mallinfo(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo


def in_use() -> int:
    # What the heap has handed out and not had back (RSS would also count what freed tensors left),
    # after freeing what only waits for the garbage collector, which could otherwise free it mid-save.
    gc.collect()
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


deepspeed.init_distributed(dist_backend="gloo")
torch.manual_seed(0)
model = LlamaForCausalLM(LlamaConfig(hidden_size=512, intermediate_size=1376, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=8, vocab_size=8000, tie_word_embeddings=tied))
model.save_pretrained(out.with_suffix(".reference"))
model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
config = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True}}
engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters()), config=config)
assert all(p.numel() == 0 for p in engine.module.parameters())

# The control: what the Trainer's save gathers into host memory before writing any of it.
before = in_use()
whole = engine._zero3_consolidated_16bit_state_dict()
consolidated = in_use() - before
del whole

# A shard is largest as it is handed to the writer. Against the lower of the heap before and after
# the save: once, on a busy machine, memory still held at the first look and freed during the save
# made every shard seem to take less than nothing.
handed, write = [], partitioned_save.save_file
partitioned_save.save_file = lambda *a, **k: (handed.append(in_use()), write(*a, **k))
before = in_use()
partitioned_save.save(engine.module, out, shard_bytes=model_bytes // 8)
held = max(handed) - min(before, in_use())
print(json.dumps({"held": held, "consolidated": consolidated, "model_bytes": model_bytes}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("tying", ["untied", "tied"])
def test_a_zero3_model_saves_a_shard_at_a_time_and_loads_back_exactly(tmp_path, tying):
    out = tmp_path / "model"
    rank = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "DS_ACCELERATOR": "cpu"}
    # mallinfo2 counts the main arena alone: with one arena, what other threads allocate is counted too.
    saved = subprocess.run([sys.executable, "-c", SAVE, str(out), tying], env={**trainer_env(), **rank, "MALLOC_ARENA_MAX": "1"}, capture_output=True, text=True, timeout=300)
    assert saved.returncode == 0, saved.stderr[-2000:]
    report = json.loads(saved.stdout.strip().splitlines()[-1])

    reference = AutoModelForCausalLM.from_pretrained(out.with_suffix(".reference")).state_dict()
    loaded = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert loaded.keys() == reference.keys()
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)
    for name in ("config.json", "generation_config.json"):
        assert json.loads((out / name).read_text()) == json.loads((out.with_suffix(".reference") / name).read_text())
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    # Tied weights are written once, as save_pretrained writes them.
    assert ("lm_head.weight" in index["weight_map"]) == (tying == "untied")
    assert len(shards) > 4 and all((out / name).is_file() for name in shards)
    # An eighth of the model per shard, plus the module that filled it: never the whole, which
    # the Trainer's save gathers first (the control: 1.0 of the model here, 0.85 once in CI).
    assert report["consolidated"] > 0.75 * report["model_bytes"]
    assert 0 < report["held"] < 0.4 * report["model_bytes"]
