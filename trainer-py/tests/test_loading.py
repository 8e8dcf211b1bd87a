"""How the training stages load a model: in which precision and onto which device, so that no
process holds an fp32 copy of weights it does not train, and what trains stays trainable."""

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from lawgpt_trainer import devices, merge, training

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "modules_to_save": ["lm_head"]}


def tiny_half_model() -> LlamaForCausalLM:
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, vocab_size=128)
    return LlamaForCausalLM(config).half()


@pytest.mark.parametrize(
    ("deepspeed", "expected"),
    [
        ({"profile": "v100", "zero_stage": 3}, {"dtype": torch.float16}),
        ({"profile": "v100", "zero_stage": 2}, {"dtype": torch.float16, "device_map": {"": "cuda:3"}}),
    ],
)
def test_v100_ranks_load_in_fp16_straight_to_their_gpu_unless_zero3_partitions(monkeypatch, deepspeed, expected):
    monkeypatch.setenv("LOCAL_RANK", "3")
    for lora in (True, False):
        assert training.load_options({"deepspeed": deepspeed}, "", partitioned=deepspeed["zero_stage"] == 3, lora=lora) == expected
    assert training.fold_options({"deepspeed": deepspeed}) == {"dtype": torch.float16, "device_map": {"": "cuda:3"}}


def test_one_process_on_a_gpu_loads_a_lora_base_in_half_precision_as_stored_and_full_training_in_fp32(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(devices, "cuda_half_dtype", lambda: torch.bfloat16)  # an A100 or newer
    on_gpu = {"device_map": {"": "cuda:0"}}
    fp16, fp32 = tmp_path / "fp16", tmp_path / "fp32"
    tiny_half_model().save_pretrained(fp16)
    tiny_half_model().float().save_pretrained(fp32)
    # fp16 stays fp16 (converting it to bf16 would only lose bits); fp32 takes the card's half.
    assert training.load_options({}, fp16, partitioned=False, lora=True) == {"dtype": torch.float16, **on_gpu}
    assert training.load_options({}, fp32, partitioned=False, lora=True) == {"dtype": torch.bfloat16, **on_gpu}
    assert training.load_options({}, fp16, partitioned=False, lora=False) == {"dtype": torch.float32, **on_gpu}


def test_the_cpu_trains_in_fp32_even_from_an_fp16_checkpoint_and_folds_into_the_base_as_stored(tmp_path):
    """transformers 5 loads a checkpoint in its own dtype unless told; published LLaMA weights are fp16."""
    tiny_half_model().save_pretrained(tmp_path)
    for config in ({}, {"deepspeed": {"profile": "cpu", "zero_stage": 2}}):
        options = training.load_options(config, tmp_path, partitioned=False, lora=True)
        assert options == {"dtype": torch.float32}
        model = AutoModelForCausalLM.from_pretrained(tmp_path, **options)
        assert {p.dtype for p in model.parameters()} == {torch.float32}
        base = AutoModelForCausalLM.from_pretrained(tmp_path, **training.fold_options(config))
        assert {p.dtype for p in base.parameters()} == {torch.float16}


def test_what_trains_on_a_half_precision_base_is_fp32_and_the_base_stays_half():
    model = merge.with_lora(tiny_half_model(), LORA)
    # peft makes its adapters fp32, but not the modules it trains in full.
    assert {p.dtype for n, p in model.named_parameters() if p.requires_grad and "lm_head" in n} == {torch.float16}
    training.trainable_in_fp32(model, {})
    trained = {p.dtype for p in model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert (trained, frozen) == ({torch.float32}, {torch.float16})


def test_deepspeed_keeps_its_own_fp32_copies_so_the_model_is_left_as_it_is():
    model = merge.with_lora(tiny_half_model(), LORA)
    training.trainable_in_fp32(model, {"deepspeed": {"profile": "v100", "zero_stage": 2}})
    assert {p.dtype for n, p in model.named_parameters() if p.requires_grad and "lm_head" in n} == {torch.float16}


def test_a_lora_model_that_saves_without_embedding_layers_is_freed_once_dropped():
    # The stages drop the trained model before the fold loads the base again, without waiting
    # for a garbage collection, which a process this size may not run for a long while.
    import gc
    import weakref

    gc.disable()
    try:
        model = merge.with_lora(tiny_half_model(), {**LORA, "modules_to_save": list(merge.TRAINED_EMBEDDINGS)})
        assert model.save_pretrained.__name__ == "save_pretrained" and "save_pretrained" in vars(model)
        dropped = weakref.ref(model)
        del model
        assert dropped() is None
    finally:
        gc.enable()
