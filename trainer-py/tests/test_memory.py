"""The per-GPU memory estimate (memory.py) against the bytes really live while a LLaMA trains on the
CPU, the layers gradient checkpointing recomputes, the ZeRO stage "auto" chooses, the 7B recipe on
8×V100-32GB, and the refusal of a stage that cannot fit."""

import json
import math
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

from conftest import TRAINER_ROOT
from lawgpt_trainer import loss, memory, merge, training
from lawgpt_trainer.errors import InvalidInput

LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "modules_to_save": ["embed_tokens", "lm_head"]}


class LiveBytes(TorchDispatchMode):
    """The peak of the bytes held by tensors that operations made while it was on: every storage an
    operation returns counts until it is freed."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, weakref.ref] = {}
        self.now = self.peak = 0

    def _freed(self, key: int, size: int) -> None:
        if self.live.pop(key, None) is not None:
            self.now -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                key, size = storage._cdata, storage.nbytes()
                if key not in self.live:
                    self.live[key] = weakref.ref(storage, lambda _, key=key, size=size: self._freed(key, size))
                    self.now += size
                    self.peak = max(self.peak, self.now)
        return out


def llama(shape: memory.Shape) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=shape.hidden, intermediate_size=shape.ffn, num_hidden_layers=shape.layers, num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads, vocab_size=shape.vocab, attn_implementation="sdpa")
    return LlamaForCausalLM(config)


@pytest.mark.parametrize("shape", [memory.Shape(256, 704, 4, 4, 4, 1000), memory.Shape(512, 1408, 3, 8, 2, 4000)], ids=["4-layers", "3-layers-gqa"])
@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize("gradient_checkpointing", [False, True, 2])
def test_the_estimate_is_close_to_what_a_training_step_holds(shape, method, gradient_checkpointing):
    # bf16 stands in for the v100 profile's fp16 (same size, and the CPU runs it): the model in half
    # precision as DeepSpeed makes it, LoRA's adapters included, one forward and backward pass with
    # the training loss. The optimizer's state is arithmetic the step does not exercise.
    config = {"method": method, "lora": LORA, "micro_batch_size": 2, "block_size": 256, "deepspeed": {"profile": "v100", "zero_stage": 0, "gradient_checkpointing": gradient_checkpointing}}
    model = llama(shape)
    if method == "lora":
        model = merge.with_lora(model, LORA)
    model = model.to(torch.bfloat16).train()
    arguments = training.checkpointing_arguments(gradient_checkpointing)
    if arguments:
        kwargs = dict(arguments["activation_checkpointing_kwargs"])
        model.activation_checkpointing_enable(kwargs, every_n_layers=kwargs.pop("every_n_layers"))
    ids = torch.randint(0, shape.vocab, (config["micro_batch_size"], config["block_size"]))
    loss.causal_lm_loss(model(input_ids=ids), ids).backward()  # the first pass makes lazily created state
    for parameter in model.parameters():
        parameter.grad = None

    tracker = LiveBytes()
    with tracker:
        loss.causal_lm_loss(model(input_ids=ids), ids).backward()
    measured = tracker.peak + sum(p.numel() * p.element_size() for p in model.parameters())

    estimated = memory.estimate(shape, config, processes=1)
    predicted = estimated["total"] - estimated["optimizer"]
    # Full training errs high: its gradients build up while the activations are freed, not on top.
    assert 0.9 * measured < predicted < memory.ESTIMATE_MARGIN * measured, (predicted / measured, estimated)


def test_checkpointing_every_n_layers_recomputes_the_layers_the_estimate_counts(tmp_path):
    model = llama(memory.Shape(32, 64, 5, 2, 2, 100))
    samples = [{"input_ids": torch.arange(16), "labels": torch.arange(16)}] * 2
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, max_steps=1, per_device_train_batch_size=2, report_to=[], save_strategy="no", disable_tqdm=True, **training.checkpointing_arguments(2))
    Trainer(model=model, args=args, train_dataset=samples).train()
    recomputing = [layer.gradient_checkpointing for layer in model.model.layers]
    # Layers 0, 2 and 4: the last one among them, which memory.py counts as recomputed on top.
    assert recomputing == [True, False, True, False, True]
    assert training.count_checkpointed_layers(model) == memory.checkpointed_layers(5, 2) == 3
    assert memory.checkpointed_layers(5, True) == 5 and memory.checkpointed_layers(5, False) == 0


def lawgpt_7b(method: str, **deepspeed) -> tuple[memory.Shape, dict]:
    # LLaMA-7B with the merged 49,953-piece vocabulary, as configs/lawgpt.json trains it on 8 GPUs:
    # LoRA under ZeRO-2, full training under ZeRO-3, what "auto" chooses for it on 8 V100s.
    pretrain = json.loads((TRAINER_ROOT.parent / "configs" / "lawgpt.json").read_text("utf-8"))["pretrain"]
    config = {**pretrain, "method": method, "deepspeed": {**pretrain["deepspeed"], "zero_stage": {"lora": 2, "full": 3}[method], **deepspeed}}
    return memory.Shape(4096, 11008, 32, 32, 32, 49984), config


V100_BYTES = 32510 * 2**20  # what a V100-SXM2-32GB reports
H100_BYTES = 81559 * 2**20  # an H100 80GB


class Said:
    def __init__(self):
        self.logs: list[tuple[str, str]] = []

    def log(self, message: str, level: str = "info") -> None:
        self.logs.append((level, message))


def with_checkpointing(config: dict, choice) -> dict:
    return {**config, "deepspeed": {**config["deepspeed"], "gradient_checkpointing": choice}}


@pytest.mark.parametrize("method", ["lora", "full"])
def test_the_7b_recipe_fits_8_v100s_with_gradient_checkpointing_and_not_without(method):
    shape, config = lawgpt_7b(method)
    assert shape.parameters() == pytest.approx(6.9e9, rel=0.01)
    assert memory.estimate(shape, with_checkpointing(config, True), processes=8)["total"] < 32e9
    assert memory.estimate(shape, with_checkpointing(config, False), processes=8)["total"] > 32e9
    # The recipe's "auto" recomputes every layer on a V100, which leaves the room the H100 runs'
    # allocator needed beyond the estimate; no fewer layers would.
    said = Said()
    assert memory.choose_checkpointing(shape, config, 8, V100_BYTES, said) is True
    assert [level for level, _ in said.logs] == ["info"] and "every decoder layer" in said.logs[0][1]
    assert memory.gpu_room(config["deepspeed"]["zero_stage"]) * memory.estimate(shape, with_checkpointing(config, 4), processes=8)["total"] > V100_BYTES


def test_auto_checkpointing_recomputes_only_as_many_layers_as_the_card_needs():
    # The 1.1B shape of bench:gpu, trained in full on one H100 (under ZeRO-3, whose room is what is
    # under test, though in one process "auto" would choose ZeRO-2): room for every activation.
    shape = memory.Shape(2048, 5632, 22, 32, 4, 50496)
    config = lawgpt_7b("full")[1]
    said = Said()
    assert memory.choose_checkpointing(shape, config, 1, H100_BYTES, said) is False
    assert said.logs[-1] == ("info", said.logs[-1][1]) and said.logs[-1][1].startswith("gradient checkpointing (auto): none, ")
    # A card with just the room every second layer recomputed needs: neither none nor one in four fits.
    estimated = {choice: memory.estimate(shape, with_checkpointing(config, choice), 1)["total"] for choice in memory.CHECKPOINTING_CHOICES}
    needs = {choice: memory.gpu_room(3) * bytes_ for choice, bytes_ in estimated.items()}
    assert needs[False] > needs[4] > needs[2] > needs[True]
    assert memory.choose_checkpointing(shape, config, 1, math.ceil(needs[2]), said) == 2
    assert "one decoder layer in 2" in said.logs[-1][1]
    # ZeRO-3's gathering made the allocator reserve more beyond the estimate (1.27 times it on an
    # H200, against at most 1.18 under ZeRO-2), so under ZeRO-3 the room ZeRO-2 leaves is too little.
    assert memory.gpu_room(3) > memory.gpu_room(2)
    assert memory.choose_checkpointing(shape, config, 1, math.ceil(memory.gpu_room(2) * estimated[2]), said) is True
    # Where not even every layer leaves the room, every layer, with a warning.
    assert memory.choose_checkpointing(shape, config, 1, math.ceil(needs[True]) - 1, said) is True
    assert said.logs[-1][0] == "warning" and "micro_batch_size" in said.logs[-1][1]
    # Without a GPU to measure against, every layer; a setting given is kept as given, unsaid.
    assert memory.choose_checkpointing(shape, config, 1, None, said) is True
    assert said.logs[-1][1] == "gradient checkpointing (auto): every decoder layer, with no GPU to fit"
    assert memory.choose_checkpointing(shape, with_checkpointing(config, 4), 1, None, said) == 4
    assert len(said.logs) == 5


@pytest.mark.parametrize("card, recomputed", [(V100_BYTES, True), (H100_BYTES, False)], ids=["v100-32gb", "80gb"])
def test_bentsao_instruction_tuning_recomputes_on_a_v100_and_not_on_an_80gb_card(card, recomputed):
    # LLaMA-7B, as configs/bentsao.json tunes it in one process: 16 x 256 tokens a micro-batch.
    sft = json.loads((TRAINER_ROOT.parent / "configs" / "bentsao.json").read_text("utf-8"))["sft"]
    assert sft["gradient_checkpointing"] == "auto"
    shape, said = memory.Shape(4096, 11008, 32, 32, 32, 32000), Said()
    choice, estimated = memory.plan_one_process(shape, sft, card, said)
    assert choice is recomputed
    assert memory.ONE_PROCESS_GPU_ROOM * estimated["total"] < card
    # Without recomputing, the V100 would need more than it has, with the room autocast's peak took.
    whole = memory.estimate(shape, memory.as_one_process({**sft, "gradient_checkpointing": False}, on_gpu=True), 1)["total"]
    assert (memory.ONE_PROCESS_GPU_ROOM * whole > V100_BYTES, memory.ONE_PROCESS_GPU_ROOM * whole < H100_BYTES) == (True, True)
    assert said.logs[0][1].startswith("gradient checkpointing (auto): ") and said.logs[1][1].startswith("estimated ")


def test_a_stage_that_cannot_fit_is_refused_before_loading_naming_what_to_change():
    shape, config = lawgpt_7b("lora", gradient_checkpointing=False)
    estimated = memory.estimate(shape, config, processes=8)
    said = Said()
    with pytest.raises(InvalidInput, match="does not fit.*activations.*micro_batch_size.*gradient_checkpointing"):
        memory.check_fits(estimated, 32 * 2**30, said)
    with pytest.raises(InvalidInput, match=r"does not fit.*lower micro_batch_size or cutoff_len, or checkpoint more layers \(sft\.gradient_checkpointing\)"):
        memory.check_fits(estimated, 32 * 2**30, said, memory.ONE_PROCESS_LEVERS)

    memory.check_fits(estimated, math.ceil(estimated["total"] / 1.1), said)
    memory.check_fits(estimated, 2 * estimated["total"], said)
    memory.check_fits(estimated, None, said)
    assert [level for level, _ in said.logs] == ["warning", "info", "info"]
    assert "may not fit" in said.logs[0][1] and "against the GPU's" in said.logs[1][1]
    assert said.logs[2][1].startswith("estimated ") and "activations" in said.logs[2][1] and "GPU" not in said.logs[2][1]


def test_auto_zero_stage_keeps_the_weights_whole_where_they_fit_and_partitions_them_where_not():
    # The 7B recipe trained in full on 8 V100s: ZeRO-2's whole fp16 weights (13.8 GB) leave no room,
    # however many layers recompute; on 8 H100s they fit, with the least recomputation that does.
    shape, config = lawgpt_7b("full", zero_stage="auto")
    said = Said()
    assert memory.choose_zero_stage(shape, config, 8, V100_BYTES, None, said) == 3
    assert said.logs[-1][1].startswith("ZeRO stage (auto): 3, ") and "over the GPU's 31.7 GiB" in said.logs[-1][1]
    assert memory.gpu_room(2) * memory.estimate(shape, lawgpt_7b("full", zero_stage=2, gradient_checkpointing=True)[1], 8)["total"] > V100_BYTES
    assert memory.choose_zero_stage(shape, config, 8, H100_BYTES, None, said) == 2
    assert said.logs[-1][1].startswith("ZeRO stage (auto): 2, ") and "of the GPU's 79.6 GiB" in said.logs[-1][1]
    # With a checkpointing setting given, only that one: none leaves ZeRO-2 no room on an H100.
    assert memory.choose_zero_stage(shape, with_checkpointing(config, False), 8, H100_BYTES, None, said) == 3
    # The 1.1B shape trained in full fits ZeRO-2 on 8 V100s.
    small = memory.Shape(2048, 5632, 22, 32, 4, 50496)
    assert memory.choose_zero_stage(small, config, 8, V100_BYTES, None, said) == 2
    # Without a GPU, ZeRO-3 (as gradient checkpointing is at its most without one); in one process
    # ZeRO-2; resumed, the stage the checkpoint was written under; a stage given, as given and unsaid.
    assert memory.choose_zero_stage(shape, config, 8, None, None, said) == 3
    assert said.logs[-1][1] == "ZeRO stage (auto): 3, with no GPU to fit ZeRO-2 on"
    assert memory.choose_zero_stage(shape, config, 1, V100_BYTES, None, said) == 2
    assert memory.choose_zero_stage(shape, config, 8, H100_BYTES, 3, said) == 3
    assert "the checkpoint resumed from was written under" in said.logs[-1][1]
    assert memory.choose_zero_stage(*lawgpt_7b("full"), 8, H100_BYTES, None, said) == 3
    assert len(said.logs) == 7


def test_a_resumed_run_keeps_the_zero_stage_its_checkpoint_was_written_under(tmp_path, monkeypatch):
    shape, config = lawgpt_7b("full", profile="cpu", zero_stage="auto")
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"hidden_size": shape.hidden, "intermediate_size": shape.ffn, "num_hidden_layers": shape.layers, "num_attention_heads": shape.heads}))
    checkpoint = tmp_path / "checkpoint-3"
    checkpoint.mkdir()
    (checkpoint / "manifest.json").write_text(json.dumps({"step": 3, "zero_stage": 2}))
    monkeypatch.setenv("WORLD_SIZE", "8")
    # Without a GPU "auto" takes ZeRO-3, but the checkpoint was written under ZeRO-2.
    fresh, _ = training.device_memory_plan({"config": config}, str(base), shape.vocab, Said())
    resumed, planned = training.device_memory_plan({"config": config, "resume_from": str(checkpoint)}, str(base), shape.vocab, Said())
    assert (fresh["zero_stage"], resumed["zero_stage"], planned["zero_stage"]) == (3, 2, 2)
    assert resumed["gradient_checkpointing"] is True and config["deepspeed"]["zero_stage"] == "auto"


def test_auto_compile_compiles_on_a_gpu_triton_supports_unless_zero_3_gathers_weights_inside_the_layers(monkeypatch):
    v100 = lambda zero_stage: {"profile": "v100", "zero_stage": zero_stage}  # noqa: E731
    choices = lambda: [training.compiles({"compile": "auto"}, d) for d in (v100(2), v100(3), {"profile": "cpu", "zero_stage": 2}, None)]  # noqa: E731
    # Without a GPU "auto" stays eager everywhere.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choices() == [False, False, False, False]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert choices() == [True, False, False, True]
    # A V100: Triton, which writes the compiled kernels, no longer supports it.
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    assert choices() == [False, False, False, False]
    # An explicit setting is kept as given (the config refuses true where ZeRO-3 may train).
    assert [training.compiles({"compile": c}, v100(2)) for c in (True, False)] == [True, False]


def test_ranks_that_resolved_auto_differently_are_refused_naming_which_chose_what():
    training.check_ranks_agree([(2, 4)] * 8)
    with pytest.raises(InvalidInput) as refused:
        training.check_ranks_agree([(2, 4)] * 4 + [(3, True)] * 4)
    assert "ZeRO-2 recomputing one decoder layer in 4 on ranks 0, 1, 2, 3; ZeRO-3 recomputing every decoder layer on ranks 4, 5, 6, 7" in str(refused.value)
    assert "deepspeed.zero_stage and deepspeed.gradient_checkpointing" in str(refused.value)
