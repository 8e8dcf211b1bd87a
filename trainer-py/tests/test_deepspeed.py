"""pretrain through the DeepSpeed launcher: two CPU processes (gloo, ZeRO-3, LoRA with trainable
embeddings) really train, agree on checkpoints and stops, each profile the steps asked for, and the
v100 profile's generated config passes DeepSpeed's and Hugging Face's own checks."""

import gzip
import json
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import CONFIGS, run_stage, trainer_env
from lawgpt_trainer import contract, deepspeed_config, profiling, training
from lawgpt_trainer.errors import InvalidInput


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_process_config(**overrides) -> dict:
    deepspeed = {"profile": "cpu", "zero_stage": 3, "gradient_checkpointing": "auto", "hosts": [{"host": "localhost", "slots": 2}], "master_addr": "127.0.0.1", "master_port": free_port()}
    return {**CONFIGS["pretrain"], "method": "lora", "max_steps": 6, "checkpoint_steps": 3, "learning_rate": 5e-3, "global_batch_size": 4, "deepspeed": deepspeed, **overrides}


@pytest.fixture(scope="module")
def two_processes(pipeline, tiny_data, tmp_path_factory):
    inputs = {"corpus": tiny_data["corpus"], "tokenizer": pipeline["vocab"].output_dir / "tokenizer", "base_model": pipeline["base"].output_dir / "model"}
    config = two_process_config(profiler={"start_step": 2, "steps": 2})
    return SimpleNamespace(inputs=inputs, config=config, run=run_stage("pretrain", inputs, tmp_path_factory.mktemp("ds"), config))


def test_two_processes_train_and_the_loss_falls(two_processes):
    metrics = two_processes.run.completed()["metrics"]
    assert metrics["processes"] == 2
    assert metrics["final_loss"] < metrics["first_loss"]
    # "auto" without a GPU recomputes every layer, here the model's one; the estimate was made.
    assert metrics["checkpointed_layers"] == 1
    assert metrics["memory_estimate_bytes"] > 0
    logged = [e["message"] for e in two_processes.run.events if e["event"] == "log"]
    assert "gradient checkpointing (auto): every decoder layer, with no GPU to fit" in logged
    assert any(m.startswith("estimated ") and "activations" in m for m in logged)
    # Rank 0 alone speaks for the stage.
    assert [e["event"] for e in two_processes.run.events].count("started") == 1


def test_the_ranks_leave_nothing_in_shared_memory(two_processes):
    # DeepSpeed's CPU backend names a 69 MB /dev/shm segment per rank after the master port.
    port = two_processes.config["deepspeed"]["master_port"]
    assert list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*")) == []


def test_every_checkpoint_holds_both_ranks_state_before_its_manifest(two_processes):
    checkpoints = [e for e in two_processes.run.events if e["event"] == "checkpoint"]
    assert [c["step"] for c in checkpoints] == [3, 6]
    manifest = json.loads((two_processes.run.output_dir / checkpoints[0]["path"] / "manifest.json").read_text("utf-8"))
    assert (manifest["world_size"], manifest["zero_stage"]) == (2, 3)
    paths = {f["path"] for f in manifest["files"]}
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= paths
    assert any("zero_pp_rank_1_" in p for p in paths) and any("zero_pp_rank_0_" in p for p in paths)


def test_lora_with_trainable_embeddings_ends_as_a_standalone_model(two_processes, pipeline):
    folder = two_processes.run.output_dir / "model"
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert model.get_input_embeddings().weight.shape[0] >= len(tokenizer)
    base = AutoModelForCausalLM.from_pretrained(pipeline["base"].output_dir / "model")
    # Both the adapted attention and the fully trained embeddings moved away from the base.
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.embed_tokens.weight"):
        trained, before = model.state_dict()[name], base.state_dict()[name]
        assert not torch.equal(trained[: before.shape[0]], before), name


TRAINED_EMBEDDINGS_ONLY = ["base_model.model.lm_head.weight", "base_model.model.model.embed_tokens.weight"]


def adapter_embeddings(folder: Path) -> dict:
    from safetensors.torch import load_file

    return {n: w for n, w in load_file(folder / "adapter_model.safetensors").items() if "embed_tokens" in n or "lm_head" in n}


def test_an_adapter_holds_each_embedding_matrix_once_its_trained_copy(two_processes):
    # peft would add a second trained copy, and under ZeRO-2 the resized base's, in every checkpoint too.
    run = two_processes.run
    checkpoint = next(e["path"] for e in run.events if e["event"] == "checkpoint")
    assert sorted(adapter_embeddings(run.output_dir / checkpoint)) == TRAINED_EMBEDDINGS_ONLY
    final = adapter_embeddings(run.output_dir / "adapter")
    assert sorted(final) == TRAINED_EMBEDDINGS_ONLY
    # The folded model's embeddings are the final adapter's: nothing the fold needed was left out.
    model = AutoModelForCausalLM.from_pretrained(run.output_dir / "model").state_dict()
    for name, weight in final.items():
        folded = model[name.removeprefix("base_model.model.")]
        assert torch.equal(folded, weight.to(folded.dtype)), name


def test_every_rank_profiles_the_configured_steps_and_rank_0_names_where_the_time_went(two_processes):
    folder = two_processes.run.output_dir / profiling.PROFILER_DIR
    for rank in (0, 1):
        with gzip.open(folder / f"rank{rank}.pt.trace.json.gz", "rt") as f:
            assert any(e.get("name", "").startswith("aten::") for e in json.load(f)["traceEvents"])
    found = json.loads((folder / profiling.OPERATIONS_FILE).read_text("utf-8"))
    assert (found["first_step"], found["last_step"], found["device"]) == (2, 3, "cpu")
    shares = [o["share"] for o in found["operations"]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-9
    # A LLaMA step's time is in its matrix products, wherever the profiler ranks them.
    assert any(o["name"] in ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear") for o in found["operations"])
    logged = [e["message"] for e in two_processes.run.events if e["event"] == "log" and e["message"].startswith("profiled steps 2-3")]
    assert len(logged) == 1


def test_deepspeed_steps_torch_fused_adamw(two_processes):
    # The profiled steps end with the optimizer update, so the trace names the kernel that ran it.
    with gzip.open(two_processes.run.output_dir / profiling.PROFILER_DIR / "rank0.pt.trace.json.gz", "rt") as f:
        names = {e.get("name") for e in json.load(f)["traceEvents"]}
    assert "aten::_fused_adamw_" in names


def test_a_checkpoint_is_not_resumed_by_another_number_of_processes(two_processes, tmp_path):
    checkpoint = next(e for e in two_processes.run.events if e["event"] == "checkpoint")
    config = {k: v for k, v in two_processes.config.items() if k != "deepspeed"}
    run = run_stage("pretrain", two_processes.inputs, tmp_path, config, resume_from=two_processes.run.output_dir / checkpoint["path"])
    assert run.returncode == 2
    assert "world_size is 2 there, 1 here" in run.stderr


def test_a_stop_file_stops_every_rank_at_the_same_step_with_a_checkpoint(two_processes, tmp_path):
    stop = tmp_path / "STOP"
    stop.write_text("stop")
    config = two_process_config(deepspeed={**two_processes.config["deepspeed"], "master_port": free_port()})
    run = run_stage("pretrain", two_processes.inputs, tmp_path / "work", config, stop_file=stop)
    assert run.returncode == contract.schema()["exit_interrupted"], run.stderr[-3000:]
    assert [e["step"] for e in run.events if e["event"] == "checkpoint"] == [1]
    assert next(e for e in run.events if e["event"] == "failed")["kind"] == "interrupted"


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_v100_config_passes_deepspeed_and_hugging_face_checks(monkeypatch, zero_stage):
    import deepspeed
    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    profile = {"profile": "v100", "zero_stage": zero_stage}
    # LaWGPT's shape: 8 processes, micro-batch 8, global batch 128.
    config = deepspeed_config.generate(profile, micro_batch_size=8, accumulation=training.accumulation_steps({"global_batch_size": 128, "micro_batch_size": 8}, 8), world_size=8)

    hf = HfTrainerDeepSpeedConfig(json.loads(json.dumps(config)))
    args = SimpleNamespace(
        world_size=8, per_device_train_batch_size=8, gradient_accumulation_steps=2, max_grad_norm=1.0, learning_rate=3e-4, adam_beta1=0.9, adam_beta2=0.999,
        adam_epsilon=1e-8, weight_decay=0.0, save_on_each_node=False, fp16=True, fp16_full_eval=False, bf16=False, bf16_full_eval=False,
        warmup_steps=0, eval_strategy="no", get_warmup_steps=lambda steps: 0,
    )
    hf.trainer_config_process(args)
    hf.trainer_config_finalize(args, SimpleNamespace(config=SimpleNamespace(hidden_size=4096)), 1000)
    assert hf.dtype() == torch.float16 and hf.is_zero3() == (zero_stage == 3)

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    deepspeed.init_distributed(dist_backend="gloo")
    try:
        # DeepSpeed checks the batch arithmetic against the data-parallel size a model-parallel unit reports.
        parsed = DeepSpeedConfig(config, mpu=SimpleNamespace(get_data_parallel_world_size=lambda: 8, get_model_parallel_world_size=lambda: 1))
    finally:
        torch.distributed.destroy_process_group()
    assert (parsed.train_batch_size, parsed.train_micro_batch_size_per_gpu, parsed.gradient_accumulation_steps) == (128, 8, 2)
    assert parsed.float16_config.enabled and not parsed.bfloat16_config.enabled
    assert parsed.float16_config.loss_scale == 0  # dynamic loss scaling
    # The gradient buckets the memory estimate counts, instead of DeepSpeed's 500M-value default.
    assert (parsed.zero_config.stage, parsed.zero_config.reduce_bucket_size) == (zero_stage, deepspeed_config.REDUCE_BUCKET_VALUES)
    assert parsed.zero_config.overlap_comm and parsed.zero_config.contiguous_gradients
    if zero_stage == 3:
        assert parsed.zero_config.prefetch_bucket_size == deepspeed_config.PREFETCH_BUCKET_VALUES
    assert parsed.zero_optimization_stage == zero_stage


def test_the_v100_profile_refuses_to_start_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InvalidInput, match="v100 needs CUDA"):
        training.precision({"profile": "v100"})


def _losses(run) -> list[float]:
    return [e["loss"] for e in run.events if e["event"] == "progress"]


@pytest.fixture(scope="module")
def under_zero_2(two_processes, tmp_path_factory):
    """The fixture's run under ZeRO-2, LoRA's default and the stage a GPU run compiles under."""
    config = two_process_config(deepspeed={**two_processes.config["deepspeed"], "zero_stage": 2, "master_port": free_port()})
    return run_stage("pretrain", two_processes.inputs, tmp_path_factory.mktemp("zero2"), config)


def test_the_zero_stage_changes_where_state_lives_not_the_math(two_processes, under_zero_2):
    """LoRA's default, ZeRO-2, against the fixture's ZeRO-3, in fp32: the same model sees the same
    data (equal first losses), and after that the two stay within 1e-3 (measured: 1e-4 to 3e-4;
    the stages reduce, clip and apply the gradients in other orders and buckets). fp16 with loss
    scaling amplifies such differences: the drift seen between stages on a GPU."""
    run = under_zero_2
    assert (run.completed()["metrics"]["processes"], run.completed()["metrics"]["zero_stage"]) == (2, 2)
    checkpoint = next(e["path"] for e in run.events if e["event"] == "checkpoint")
    assert json.loads((run.output_dir / checkpoint / "manifest.json").read_text("utf-8"))["zero_stage"] == 2
    assert sorted(adapter_embeddings(run.output_dir / checkpoint)) == TRAINED_EMBEDDINGS_ONLY
    ours, theirs = _losses(run), _losses(two_processes.run)
    assert ours[0] == pytest.approx(theirs[0], rel=1e-6)
    assert ours == pytest.approx(theirs, rel=1e-3)


def test_compiled_layers_train_as_the_eager_ones(two_processes, under_zero_2, tmp_path):
    """`compile` under ZeRO-2, the stage a GPU run compiles under, with every layer recomputed (what
    "auto" picks here and on V100s): the compiled layer computes what the eager one does, to
    rounding (the compiler orders some sums its own way; measured: within 1e-4 over six steps),
    checkpoints and all. Against the same stage eager: against ZeRO-3, the stages' own drift came
    on top and once passed 1e-3."""
    config = two_process_config(compile=True, deepspeed={**two_processes.config["deepspeed"], "zero_stage": 2, "master_port": free_port()})
    run = run_stage("pretrain", two_processes.inputs, tmp_path, config)
    metrics = run.completed()["metrics"]
    assert (metrics["compiled_layers"], metrics["checkpointed_layers"]) == (1, 1)
    assert [e["step"] for e in run.events if e["event"] == "checkpoint"] == [3, 6]
    ours, theirs = _losses(run), _losses(under_zero_2)
    assert ours[0] == pytest.approx(theirs[0], rel=1e-5)
    assert ours == pytest.approx(theirs, rel=1e-3)
    assert under_zero_2.completed()["metrics"]["compiled_layers"] == 0


# A ZeRO-2 engine's start and first step in one process, after torch._dynamo (which transformers
# imports): it says whether torch's compiler backends were imported on the way.
ENGINE_START = """
import sys
import torch, torch._dynamo, deepspeed
from lawgpt_trainer import training
if sys.argv[1] == "uncompiled":
    training.import_deepspeed_muon_uncompiled()
deepspeed.init_distributed(dist_backend="gloo")
model = torch.nn.Linear(4, 4)
engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters()), config={"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 2}})
engine.backward(engine(torch.ones(1, 4)).sum())
engine.step()
print("torch._inductor.compile_fx" in sys.modules)
"""


@pytest.mark.parametrize("uncompiled", [True, False])
def test_a_zero_engine_starts_and_steps_without_importing_torchs_compiler(uncompiled):
    """DeepSpeed imports its Muon module, and torch's compiler with it (3 s of every start here),
    unless the trainer has imported that module with torch.compile as the identity; ZeRO still
    takes torch's AdamW and steps."""
    rank = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "DS_ACCELERATOR": "cpu"}
    started = subprocess.run([sys.executable, "-c", ENGINE_START, "uncompiled" if uncompiled else "as-is"], env={**trainer_env(), **rank}, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr[-2000:]
    assert started.stdout.strip().splitlines()[-1] == str(not uncompiled)


def test_full_training_under_zero3_loads_the_model_partitioned(pipeline, tiny_data, tmp_path):
    """zero.Init while loading: each of two ranks keeps half the weights, never the whole fp32 model.
    ZeRO-3 is what "auto", full training's default on several processes, chooses without a GPU."""
    shape = {**CONFIGS["base"], "hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 6, "num_attention_heads": 8, "num_key_value_heads": 8}
    base = run_stage("base", {}, tmp_path / "base", shape).output_dir / "model"
    inputs = {"corpus": tiny_data["corpus"], "tokenizer": pipeline["vocab"].output_dir / "tokenizer", "base_model": base}
    config = two_process_config(method="full", max_steps=2, checkpoint_steps=2, eval_blocks=0, deepspeed={**two_process_config()["deepspeed"], "zero_stage": "auto"})
    run = run_stage("pretrain", inputs, tmp_path / "full", config)
    metrics = run.completed()["metrics"]
    assert metrics["zero_stage"] == 3
    assert "ZeRO stage (auto): 3, with no GPU to fit ZeRO-2 on" in [e["message"] for e in run.events if e["event"] == "log"]
    assert json.loads((run.output_dir / "checkpoints" / "checkpoint-2" / "manifest.json").read_text("utf-8"))["zero_stage"] == 3
    fp32_bytes = 4 * metrics["model_parameters"]
    assert metrics["model_parameters"] > 40e6
    assert metrics["model_load_host_bytes"] < 0.75 * fp32_bytes
    assert 0 < metrics["host_rss_before_model_bytes"] < metrics["host_peak_rss_bytes"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "full" / "out" / "model")
    assert sum(p.numel() for p in model.parameters()) == metrics["model_parameters"]


def test_instruction_tuning_trains_data_parallel_and_folds_on_rank_0(pipeline, tiny_data, tmp_path):
    deepspeed = {**two_process_config()["deepspeed"], "zero_stage": 2, "gradient_checkpointing": False}
    config = {**CONFIGS["sft"], "max_steps": 4, "checkpoint_steps": 2, "learning_rate": 5e-3, "deepspeed": deepspeed}
    inputs = {"model": pipeline["pretrain"].output_dir / "model", "dialogue": tiny_data["dialogue"], "instructions": tiny_data["instructions"]}
    run = run_stage("sft", inputs, tmp_path, config)
    completed = run.completed()
    metrics = completed["metrics"]
    assert (metrics["processes"], metrics["zero_stage"]) == (2, 2)
    assert metrics["final_loss"] < metrics["first_loss"] and metrics["memory_estimate_bytes"] > 0
    # Each rank took its half of every step's samples: both ranks' state is in each checkpoint.
    checkpoints = [e for e in run.events if e["event"] == "checkpoint"]
    assert [c["step"] for c in checkpoints] == [2, 4]
    manifest = json.loads((run.output_dir / checkpoints[0]["path"] / "manifest.json").read_text("utf-8"))
    assert manifest["world_size"] == 2 and {"rng_state_0.pth", "rng_state_1.pth"} <= {f["path"] for f in manifest["files"]}
    # Rank 0 folded the adapter into a standalone model that loads and generates.
    assert completed["outputs"] == {"adapter": "adapter", "model": "model"}
    model = AutoModelForCausalLM.from_pretrained(run.output_dir / "model")
    tokenizer = AutoTokenizer.from_pretrained(run.output_dir / "model")
    assert model.generate(**tokenizer("欠钱不还怎么办", return_tensors="pt"), max_new_tokens=3, do_sample=False).shape[1] > 0
