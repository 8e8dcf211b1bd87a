"""What pretrain and sft share: device and precision choice, the Hugging Face Trainer setup (with
DeepSpeed when the stage config asks for it), checkpoints handed to the orchestrator, resume,
progress events from inside the loop, and the profiler and startup timing around it."""

import gc
import importlib
import json
import os
import resource
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from transformers import LlamaConfig, Trainer, TrainerCallback, TrainingArguments
from transformers.modeling_layers import GradientCheckpointingLayer

from lawgpt_trainer import checkpoints, compile_cache, contract, deepspeed_config, devices, distributed, embeddings, loss, memory, profiling, running_version, startup
from lawgpt_trainer.errors import Interrupted, InvalidInput
from lawgpt_trainer.events import EventStream

CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = contract.schema()["tensorboard_dir"]


def precision(deepspeed: dict | None) -> dict:
    """The GPU's half precision (devices.py), fp32 on CPU; a DeepSpeed profile decides for itself."""
    profile = deepspeed["profile"] if deepspeed else None
    if profile == "v100" and not torch.cuda.is_available():
        raise InvalidInput("deepspeed.profile v100 needs CUDA GPUs, and none is visible; the cpu profile runs without")
    if profile == "v100":
        return {"fp16": True}
    if profile == "cpu" or not torch.cuda.is_available():
        return {"use_cpu": True}
    return {"bf16": True} if devices.cuda_half_dtype() == torch.bfloat16 else {"fp16": True}


class _Timed:
    """An iterator that adds the seconds each of its items took to arrive to `trainer.data_wait_seconds`."""

    def __init__(self, iterator, trainer: "BatchWaitTrainer"):
        self.iterator, self.trainer = iterator, trainer

    def __iter__(self):
        return self

    def __next__(self):
        start = time.perf_counter()
        try:
            return next(self.iterator)
        finally:
            self.trainer.data_wait_seconds += time.perf_counter() - start


class BatchWaitTrainer(Trainer):
    """The Trainer, counting the seconds its loop waits for training batches: reading, collating,
    copying to the device, for all of a step's micro-batches before its first forward pass. No
    dataloader workers fetch ahead, and under DeepSpeed or with several ranks the step before ended
    waiting for the device (DeepSpeed's overflow check, the ranks' vote on stopping), so the device
    idles meanwhile: how long data loading stalled training. In one process the device may still be
    finishing the step before, and this is an upper bound."""

    data_wait_seconds = 0.0

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        return super().get_batch_samples(_Timed(epoch_iterator, self), num_batches, device)


class ProgressEvents(TrainerCallback):
    def __init__(self, events: EventStream):
        self.events = events
        self.losses: list[float] = []
        # fp16 steps whose gradients overflowed: dynamic loss scaling skips the update and lowers
        # its scale. A few at the start are normal; a run that keeps skipping is not learning.
        self.overflow_skipped = 0

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if getattr(optimizer, "step_was_skipped", False):
            self.overflow_skipped += 1

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))
            self.events.progress(state.global_step, state.max_steps, logs["loss"], logs.get("learning_rate"))


class FirstStep(TrainerCallback):
    """Ends the startup's engine phase (startup.py) as the attempt's first step begins, and its
    first_step phase as that step ends."""

    def __init__(self):
        self.begun = self.ended = False

    def on_step_begin(self, args, state, control, **kwargs):
        if not self.begun:
            self.begun = True
            startup.mark("engine")

    def on_step_end(self, args, state, control, **kwargs):
        if not self.ended:
            self.ended = True
            startup.mark("first_step")


class CheckpointHandoff(TrainerCallback):
    """Once the Trainer has finished writing checkpoint-N, hashes it into a manifest on a background
    thread (training goes on meanwhile) and reports it; the orchestrator uploads it from there.
    The held-out loss of that step, when the stage evaluates, goes into the manifest."""

    def __init__(self, events: EventStream, request: dict, vocab_size: int):
        self.events, self.request, self.vocab_size = events, request, vocab_size
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="manifest")
        self.pending = []
        self.eval_losses: dict[int, float] = {}
        self.last_done = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        self.last_done = time.monotonic()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.last_done = time.monotonic()
        if metrics and "eval_loss" in metrics:
            self.eval_losses[state.global_step] = float(metrics["eval_loss"])
            self.events.log(f"step {state.global_step}: held-out loss {metrics['eval_loss']:.4f}")

    def on_save(self, args, state, control, **kwargs):
        # Every rank writes its own shards and RNG state: the checkpoint is complete only once all
        # of them are done, and only then may the manifest make it exist. Then each names the
        # files it sees, its own among them: on a filesystem shared by several hosts, rank 0's own
        # listing could miss another host's (NFS caches what a folder holds), and a checkpoint
        # without them would verify and never resume.
        distributed.barrier()
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        seen = distributed.gathered(checkpoints.files_in(folder))
        if not distributed.is_main():
            return
        # The Trainer saves right after the step ends (and after its evaluation, when there is one).
        seconds = time.monotonic() - self.last_done
        eval_loss = self.eval_losses.get(state.global_step)
        zero_stage = args.deepspeed["zero_optimization"]["stage"] if args.deepspeed else None
        names = sorted(set().union(*seen))
        self.pending.append(self.pool.submit(self._commit, folder, state.global_step, args.world_size, eval_loss, zero_stage, seconds, names))

    def _commit(self, folder: Path, step: int, world_size: int, eval_loss: float | None, zero_stage: int | None, save_seconds: float, names: list[str]) -> None:
        checkpoints.write_manifest(folder, names, self.request, step, world_size, self.vocab_size, eval_loss, zero_stage)
        relative = folder.relative_to(self.request["output_dir"]).as_posix()
        self.events.emit("checkpoint", step=step, path=relative, save_seconds=round(save_seconds, 3))

    def wait(self) -> None:
        # Every commit is waited for, and the first failure raised after: the checkpoints after a
        # failed one are as good, and an unfinished one would be lost when the rank exits.
        failures = [e for e in (future.exception() for future in self.pending) if e]
        self.pool.shutdown()
        if failures:
            raise failures[0]


class StopOnRequest(TrainerCallback):
    """SIGTERM or the request's stop file (cancel, pause, shutdown) ends training after the current
    step with a checkpoint, so at most one step is lost. Under DeepSpeed the orchestrator cannot
    signal the ranks themselves (the launcher would kill them after 30 s, mid-save), so it creates
    the stop file and the ranks agree on the step to stop at."""

    def __init__(self, stop_file: str | None):
        self.stop_file = stop_file
        self.requested = False
        signal.signal(signal.SIGTERM, self._request)

    def _request(self, signum, frame):
        self.requested = True

    def on_step_end(self, args, state, control, **kwargs):
        asked = self.requested or bool(self.stop_file and os.path.exists(self.stop_file))
        if distributed.any_rank(asked, args.device):
            self.requested = True
            control.should_save = True
            control.should_training_stop = True


def world_size(config: dict) -> int:
    """Processes the launcher started, checked against the config's hosts: a run launched in
    another shape than configured would write checkpoints nobody can resume."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    deepspeed = config.get("deepspeed")
    configured = sum(h["slots"] for h in deepspeed["hosts"]) if deepspeed else 1
    if launched != configured:
        raise InvalidInput(f"launched as {launched} processes, the config's deepspeed.hosts give {configured}")
    return launched


def accumulation_steps(config: dict, processes: int) -> int:
    if config.get("global_batch_size"):
        return config["global_batch_size"] // (config["micro_batch_size"] * processes)
    return config["gradient_accumulation_steps"]


def optimizer(deepspeed: dict | None, precision_args: dict) -> str:
    """The Trainer's AdamW: torch's fused one, so the cpu profile's tests step the optimizer GPU runs
    step (DeepSpeed steps it on its fp32 partitions; its config names none of DeepSpeed's own), and
    stated because transformers makes it the default only from torch 2.8 on. One process in fp16
    takes the unfused one (multi-tensor on a GPU): under its gradient scaler the fused kernel skips
    an overflowed update itself, so accelerate could not tell the step was skipped, the learning
    rate schedule would move on and overflow_skipped_steps would stay 0. DeepSpeed scales the loss
    itself and skips without stepping."""
    return "adamw_torch" if precision_args.get("fp16") and not deepspeed else "adamw_torch_fused"


def checkpointing_arguments(gradient_checkpointing: bool | int) -> dict:
    """TrainingArguments for the stage's `gradient_checkpointing`: transformers recomputes every
    n-th decoder layer (memory.py counts them) with PyTorch's non-reentrant checkpointing."""
    every = memory.checkpoint_every(gradient_checkpointing)
    if not every:
        return {}
    return {"activation_checkpointing": True, "activation_checkpointing_kwargs": {"use_reentrant": False, "every_n_layers": every}}


def compile_layers(model) -> int:
    """Compiles each decoder layer in place (torch.compile, regional: its parameter names, which
    checkpoints and LoRA folding read, stay as they are; the compiler fuses the elementwise work
    between the matrix products). Returns how many layers it compiled."""
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    for layer in layers:
        layer.compile()
    return len(layers)


# The oldest GPUs Triton, which generates inductor's kernels, supports (its README: Ampere on). It
# still compiles for a V100 (7.0), which PyTorch allows, but no longer tests it there.
COMPILED_FROM_CAPABILITY = (8, 0)


def rank_gpu() -> int:
    """The GPU this rank trains on: DeepSpeed's launcher gives each rank its index on the node."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def trains_on_gpu(deepspeed: dict | None) -> bool:
    """Whether the stage trains on a GPU: the cpu profile trains on the CPU even where one is visible."""
    return torch.cuda.is_available() and (deepspeed or {}).get("profile") != "cpu"


def compiles(config: dict, deepspeed: dict | None) -> bool:
    """Whether the stage compiles its layers: `compile` true, or "auto" on a GPU that Triton
    supports, unless the stage trains under ZeRO-3 (`deepspeed` as resolved), whose hooks gather
    weights inside the layers. On the CPU "auto" stays eager: compiling costs more there (17 s for
    the tiny model's first step) than a short run gains."""
    if config["compile"] != "auto":
        return config["compile"]
    if not trains_on_gpu(deepspeed) or torch.cuda.get_device_capability(rank_gpu()) < COMPILED_FROM_CAPABILITY:
        return False
    return not (deepspeed and deepspeed["zero_stage"] == 3)


def count_checkpointed_layers(model) -> int:
    """Decoder layers that recompute their forward pass in the backward one, as training set them."""
    return sum(1 for m in model.modules() if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing)


def arguments(request: dict, evaluates: bool, deepspeed: dict | None, gradient_checkpointing: bool | int = False) -> TrainingArguments:
    """The stage's TrainingArguments, under `deepspeed`: the config's DeepSpeed section with its
    "auto" settings resolved (device_memory_plan), or None, and then in one process with
    `gradient_checkpointing` (one_process_memory_plan). Under DeepSpeed they register its config
    with transformers, so they come before the model is loaded: with ZeRO-3, from_pretrained then
    builds the model partitioned across the ranks (zero.Init) instead of whole on every one."""
    config = request["config"]
    processes = world_size(config)
    accumulation = accumulation_steps(config, processes)
    precision_args = precision(deepspeed)
    extra = {}
    if deepspeed:
        extra["deepspeed"] = deepspeed_config.generate(deepspeed, config["micro_batch_size"], accumulation, processes)
        extra.update(checkpointing_arguments(deepspeed["gradient_checkpointing"]))
    else:
        extra.update(checkpointing_arguments(gradient_checkpointing))
    # transformers 5 takes the TensorBoard folder from the environment only.
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(Path(request["output_dir"]) / TENSORBOARD_DIR)
    args = TrainingArguments(
        output_dir=str(Path(request["output_dir"]) / CHECKPOINTS_DIR),
        # `epochs`, when set, decides the length instead of max_steps (-1: no step limit).
        max_steps=-1 if config.get("epochs") else config["max_steps"],
        num_train_epochs=config.get("epochs") or 1,
        per_device_train_batch_size=config["micro_batch_size"],
        gradient_accumulation_steps=accumulation,
        learning_rate=config["learning_rate"],
        warmup_steps=config["warmup_steps"],
        lr_scheduler_type="cosine",
        logging_steps=config["logging_steps"],
        save_strategy="steps",
        save_steps=config["checkpoint_steps"],
        eval_strategy="steps" if evaluates else "no",
        eval_steps=config["checkpoint_steps"],
        per_device_eval_batch_size=config["micro_batch_size"],
        report_to=["tensorboard"],
        disable_tqdm=True,
        seed=config["seed"],
        data_seed=config["seed"],
        dataloader_num_workers=0,
        remove_unused_columns=False,
        max_grad_norm=deepspeed_config.MAX_GRAD_NORM,
        optim=optimizer(deepspeed, precision_args),
        **precision_args,
        **extra,
    )
    # Asking sets up the process group, which zero.Init partitions the model across when it loads;
    # DeepSpeed's own communication layer then takes it over (the Trainer would, but only later).
    if args.world_size != processes:
        raise RuntimeError(f"the process group has {args.world_size} processes, the launcher started {processes}")
    if deepspeed:
        import deepspeed as ds

        import_deepspeed_muon_uncompiled()
        ds.init_distributed()
        if deepspeed["profile"] == "cpu":
            distributed.release_deepspeed_shm()
        check_ranks_agree(distributed.gathered((deepspeed["zero_stage"], deepspeed["gradient_checkpointing"])))
    return args


def check_ranks_agree(choices: list[tuple[int, bool | int]]) -> None:
    """Refuses ranks that resolved "auto" differently (each rank's `(zero_stage,
    gradient_checkpointing)`, in rank order), naming which chose what. Each resolves it from its
    own GPU's memory, so ranks on cards of different sizes may, and ranks under different ZeRO
    stages or recomputing different layers would wait for each other's collectives forever."""
    by_choice: dict[tuple, list[int]] = {}
    for rank, choice in enumerate(choices):
        by_choice.setdefault(tuple(choice), []).append(rank)
    if len(by_choice) > 1:
        said = "; ".join(f"ZeRO-{stage} recomputing {memory.describe_checkpointing(checkpointing)} on ranks {', '.join(map(str, ranks))}" for (stage, checkpointing), ranks in by_choice.items())
        raise InvalidInput(f"the ranks' GPUs differ and their \"auto\" settings came out differently: {said}; set deepspeed.zero_stage and deepspeed.gradient_checkpointing for the smallest GPU")


# DeepSpeed's engine and ZeRO optimizers import its Muon optimizer's module to ask whether the
# stage's optimizer is Muon, and that module wraps its update functions in torch.compile, which
# imports torch's compiler backends (torch._inductor.compile_fx): 3 s of every stage's start on
# this machine's CPU, for an optimizer no stage uses (they train with torch's AdamW).
DEEPSPEED_MUON = "deepspeed.runtime.zero.muon.original_muon"


def import_deepspeed_muon_uncompiled() -> None:
    """Imports DeepSpeed's Muon module with torch.compile as the identity while it does, so that
    its functions stay plain Python (were a stage to train with Muon, its update would run eagerly).
    The `compile` setting compiles the model's layers later, with the real torch.compile."""
    if DEEPSPEED_MUON in sys.modules:
        return
    compile_ = torch.compile
    torch.compile = lambda model=None, **_: model if model is not None else (lambda fn: fn)
    try:
        importlib.import_module(DEEPSPEED_MUON)
    finally:
        torch.compile = compile_


def stored_dtype(model_dir: str) -> torch.dtype:
    """The dtype a model folder's weights are stored in, as its config says (fp32 if it says none)."""
    config = json.loads((Path(model_dir) / "config.json").read_text("utf-8"))
    return getattr(torch, config.get("dtype") or config.get("torch_dtype") or "float32")


def _onto_this_gpu() -> dict:
    return {"device_map": {"": f"cuda:{rank_gpu()}"}}


def load_options(config: dict, model_dir: str, partitioned: bool, lora: bool) -> dict:
    """How from_pretrained loads the model in `model_dir` for training: never a full fp32 copy of
    weights that do not train, and on a GPU straight onto it.
    - Under the v100 profile, in fp16: DeepSpeed trains in it and keeps fp32 master copies of what
      trains itself; onto the rank's GPU unless ZeRO-3 is to partition the model while loading.
    - One process on a GPU: LoRA's frozen base in half precision, as stored when it is stored so
      (autocast computes in the card's dtype either way, and converting fp16 to bf16 would only
      lose bits), else in the card's (devices.py); a model trained in full in fp32, which mixed
      precision keeps as the master weights.
    - On the CPU, the cpu profile included: in fp32.
    The dtype is always stated: transformers 5 otherwise loads a checkpoint in its own dtype, and
    published LLaMA weights are fp16."""
    deepspeed = config.get("deepspeed")
    on_gpu = _onto_this_gpu()
    if deepspeed and deepspeed["profile"] == "v100":
        return {"dtype": torch.float16} if partitioned else {"dtype": torch.float16, **on_gpu}
    if deepspeed or not torch.cuda.is_available():
        return {"dtype": torch.float32}
    if not lora:
        return {"dtype": torch.float32, **on_gpu}
    stored = stored_dtype(model_dir)
    return {"dtype": stored if stored in (torch.float16, torch.bfloat16) else devices.cuda_half_dtype(), **on_gpu}


def fold_options(config: dict) -> dict:
    """How the LoRA fold loads the base again, alone in its process once training is over. Under the
    v100 profile in fp16 on the GPU, as it trained. Otherwise as stored, on the CPU: the merged model
    keeps the base's precision (merging a small LoRA update into a bf16 copy of an fp16 base loses
    much of it) and the host holds one copy of the base at that precision."""
    deepspeed = config.get("deepspeed")
    if deepspeed and deepspeed["profile"] == "v100":
        return {"dtype": torch.float16, **_onto_this_gpu()}
    return {"dtype": "auto"}


def trainable_in_fp32(model, config: dict) -> None:
    """Without DeepSpeed, what trains is kept in fp32 on a half-precision base: the mixed-precision
    scaler refuses fp16 gradients, and Adam's small updates vanish in half precision. peft makes its
    adapters fp32 but leaves the modules it trains in full (embed_tokens, lm_head) in the base's
    dtype. DeepSpeed keeps fp32 copies of what trains itself."""
    if config.get("deepspeed"):
        return
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()


def release(accelerator) -> None:
    """Frees what training held (the DeepSpeed engine, optimizer states, GPU memory), once the
    caller has dropped the trainer and the model, its `accelerator` aside: the engine refers to
    itself, so only a collection after the last reference has gone frees the trained model."""
    accelerator.free_memory()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def host_rss_bytes() -> int:
    """This process's resident memory now, for the stages' memory accounting."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def model_shape(model_dir: str, vocab: int) -> memory.Shape:
    """The shape of the LLaMA in `model_dir` with `vocab` tokens, its config read as transformers
    reads it: a config.json that leaves out a field LLaMA has a default for still loads, and so
    must still be estimated."""
    return memory.Shape.of(LlamaConfig.from_pretrained(model_dir).to_dict(), embeddings.padded_rows(vocab))


def device_memory_plan(request: dict, model_dir: str, vocab: int, events) -> tuple[dict | None, dict]:
    """Under DeepSpeed, before the model loads: the config's DeepSpeed section with `zero_stage` and
    `gradient_checkpointing` as the stage trains with them ("auto" resolved for this rank's GPU), and
    the estimate of what each rank's device will hold (memory.py), said by part; on a GPU a stage
    that cannot fit stops here (memory.check_fits). `memory_estimate_bytes` goes beside
    `gpu_peak_bytes` in the metrics, with the `zero_stage` trained under. One process on a GPU
    trains under autocast, which the estimate does not model."""
    config = memory.as_estimated(request["config"])
    deepspeed = config.get("deepspeed")
    if not deepspeed:
        return None, {}
    shape = model_shape(model_dir, vocab)
    processes = world_size(config)
    on_gpu = trains_on_gpu(deepspeed)
    device_bytes = torch.cuda.get_device_properties(rank_gpu()).total_memory if on_gpu else None
    resumed_stage = checkpoints.written_zero_stage(request["resume_from"]) if request.get("resume_from") else None
    # The checkpointing "auto" chooses depends on the stage chosen first.
    staged = {**deepspeed, "zero_stage": memory.choose_zero_stage(shape, config, processes, device_bytes, resumed_stage, events)}
    deepspeed = {**staged, "gradient_checkpointing": memory.choose_checkpointing(shape, {**config, "deepspeed": staged}, processes, device_bytes, events)}
    estimated = memory.estimate(shape, {**config, "deepspeed": deepspeed}, processes)
    memory.check_fits(estimated, device_bytes, events)
    return deepspeed, {"memory_estimate_bytes": estimated["total"], "zero_stage": deepspeed["zero_stage"]}


def one_process_memory_plan(request: dict, model_dir: str, vocab: int, events) -> tuple[bool | int, dict]:
    """For a stage in one process (sft), before the model loads: its `gradient_checkpointing` with
    "auto" resolved for the GPU, and the estimate of what the GPU will hold, said; on a GPU a stage
    that cannot fit stops here. `memory_estimate_bytes` goes beside `gpu_peak_bytes` in the metrics."""
    shape = model_shape(model_dir, vocab)
    device_bytes = torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None
    choice, estimated = memory.plan_one_process(shape, request["config"], device_bytes, events)
    return choice, {"memory_estimate_bytes": estimated["total"]}


def memory_metrics(model_parameters: int, before_model_rss: int, loaded_rss: int) -> dict:
    """Parameters, the host memory this rank held before loading them (the process, its libraries,
    CUDA's context, the data: the floor that the model's own host memory comes on top of) and the
    memory their load took, the rank's peak host memory, and where there is a GPU the peak its
    tensors took and the peak the allocator reserved for them (what nvidia-smi sees, less CUDA's
    own): what the per-GPU estimate is checked against."""
    metrics = {
        "on_gpu": int(torch.cuda.is_available()),
        "model_parameters": model_parameters,
        "host_rss_before_model_bytes": before_model_rss,
        "model_load_host_bytes": loaded_rss,
        "host_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    if torch.cuda.is_available():
        metrics["gpu_peak_bytes"] = torch.cuda.max_memory_allocated()
        metrics["gpu_reserved_peak_bytes"] = torch.cuda.max_memory_reserved()
    return metrics


def train(model, args: TrainingArguments, dataset, collator, request: dict, events: EventStream, vocab_size: int, compile: bool, eval_dataset=None) -> tuple[Trainer, dict]:
    """Runs the configured optimizer steps (resuming from `request.resume_from` when given), with
    the decoder layers compiled where `compile` (see `compiles`; warm from the `compile_cache`
    input, and offered back to it), scores
    `eval_dataset` at every checkpoint, hands every checkpoint to the orchestrator, and returns the
    trainer (to save the result with: under ZeRO-3 only it holds whole weights) with the losses
    logged, the step resumed at, the number of processes, the held-out loss at each checkpoint, and
    the steps this attempt ran with the seconds they took."""
    processes = world_size(request["config"])
    resumed_at = 0
    if request.get("resume_from"):
        manifest = checkpoints.check_resumable(request["resume_from"], request, processes, vocab_size)
        resumed_at = manifest["step"]
        events.log(f"resuming from checkpoint-{resumed_at}")
        # Resuming after a fix to the trainer is what resume is for, so another version is allowed, and said.
        if manifest["trainer_version"] != running_version():
            events.log(f"checkpoint-{resumed_at} was written by trainer {manifest['trainer_version']}, this is {running_version()}", level="warning")

    callbacks = []
    if compile:
        kind = compile_cache.device_kind(args.device)
        loaded = compile_cache.load(request.get("inputs", {}).get("compile_cache"), kind, events)
        callbacks.append(compile_cache.CompileCacheOffer(request["output_dir"], kind, loaded, events))
    compiled = compile_layers(model) if compile else 0
    if request["config"]["compile"] == "auto":
        events.log(f'compile "auto": {f"compiling {compiled} decoder layers" if compiled else "eager"}')
    progress, handoff, stop = ProgressEvents(events), CheckpointHandoff(events, request, vocab_size), StopOnRequest(request.get("stop_file"))
    profiler = profiling.StepProfiler(request["config"].get("profiler"), request["output_dir"], events)
    trainer = BatchWaitTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        compute_loss_func=loss.causal_lm_loss,
        callbacks=[FirstStep(), progress, handoff, stop, profiler, *callbacks],
    )
    try:
        output = trainer.train(resume_from_checkpoint=request.get("resume_from"))
    except BaseException:
        # Hand over the checkpoints already saved, but let the training error be the one reported.
        try:
            handoff.wait()
        except Exception as e:  # noqa: BLE001
            print(f"could not finish a checkpoint after the failure: {e}", file=sys.stderr)
        raise
    handoff.wait()
    # No rank leaves before rank 0 has handed over the last checkpoint: the launcher stops every
    # rank as soon as one exits with an error, which an interrupted rank does.
    distributed.barrier()
    if stop.requested:
        raise Interrupted(f"stopped on request at step {trainer.state.global_step}, checkpoint saved")
    return trainer, {
        "losses": progress.losses,
        "overflow_skipped_steps": progress.overflow_skipped,
        "resumed_at": resumed_at,
        "processes": processes,
        "eval_losses": handoff.eval_losses,
        "steps": trainer.state.global_step - resumed_at,
        "sequences_per_step": args.per_device_train_batch_size * args.gradient_accumulation_steps * processes,
        "checkpointed_layers": count_checkpointed_layers(model),
        "compiled_layers": compiled,
        "seconds": output.metrics["train_runtime"],
        "data_wait_seconds": trainer.data_wait_seconds,
    }


def loss_metrics(trained: dict, sequence_length: int) -> dict:
    """Losses, where training resumed, how fast this attempt's steps went (the training loop alone,
    checkpoint saves included), its processes, the tokens it trained on: steps x sequences per
    step x `sequence_length` (an upper bound where sequences are padded to it), the seconds it
    waited for batches, the steps fp16 overflow skipped, the layers gradient checkpointing
    recomputed, the layers compiled (and the compile cache's hits and misses), and where the
    seconds before its first step went."""
    losses = trained["losses"]
    metrics = {
        **startup.metrics(),
        "resumed_from_step": trained["resumed_at"],
        "train_seconds": trained["seconds"],
        "train_steps_per_second": trained["steps"] / trained["seconds"],
        "processes": trained["processes"],
        "train_tokens": trained["steps"] * trained["sequences_per_step"] * sequence_length,
        "data_wait_seconds": trained["data_wait_seconds"],
        "overflow_skipped_steps": trained["overflow_skipped_steps"],
        "checkpointed_layers": trained["checkpointed_layers"],
        "compiled_layers": trained["compiled_layers"],
        # Counted now, when the stage has also scored its held-out loss.
        **(compile_cache.hits() if trained["compiled_layers"] else {}),
    }
    if losses:
        metrics.update(first_loss=losses[0], final_loss=losses[-1])
    return metrics
