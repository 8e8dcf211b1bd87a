"""What one rank's device holds at its peak while a stage trains, estimated from the model's shape
and the stage config before anything is loaded: so that a run which cannot fit says so before it
spends minutes loading a model, and every GPU run can put the estimate beside what it measured
(`gpu_peak_bytes`). The README's per-GPU table for a 7B on 8×V100-32GB comes from here.

Weights, gradients and optimizer state follow from the parameter counts and the ZeRO stage.
Activations follow per token from what autograd saves in a LLaMA decoder layer under SDPA, counted
on the CPU (tests/test_memory.py checks the whole estimate against the bytes live at a training
step's peak). DeepSpeed's gradient buckets come from the config deepspeed_config.py writes.
`zero_stage: "auto"` and `gradient_checkpointing: "auto"` are resolved here, from the estimate and
the GPU's memory."""

import math
from dataclasses import dataclass

from lawgpt_trainer import deepspeed_config, loss
from lawgpt_trainer.errors import InvalidInput

# Bytes per value in the precision a stage trains in: fp16 under the v100 profile, fp32 otherwise.
HALF, FULL = 2, 4
# Per trainable value: Adam's two moments in fp32, and under mixed precision the fp32 master weight;
# while the optimizer steps, also an fp32 copy of the gradient.
ADAM_BYTES, MASTER_BYTES, STEP_GRADIENT_BYTES = 8, 4, 4
# On the CPU the estimate came out between 0.92 and 1.28 times the bytes really live at the peak
# (tests/test_memory.py): a stage refuses to start only when even this margin cannot make it fit.
ESTIMATE_MARGIN = 1.3
# What the allocator reserved at the peak, over the estimate, in bench:gpu's runs on an H100 and an
# H200 (bench/results/gpu-2026-11-28-*): 0.82-1.18 under ZeRO-2, and 1.21 and 1.27 under ZeRO-3,
# whose gathered weights come and go in blocks of every size (what tensors took was 0.78-1.01 of
# it). `zero_stage: "auto"` and `gradient_checkpointing: "auto"` leave this much room, by stage.
GPU_ROOM, ZERO_3_GPU_ROOM = 1.25, 1.35
# One process under autocast (sft) held 1.30 times its estimate in tensors, and the allocator 1.33
# (BenTsao's row of bench:gpu on an H200, 8 of LLaMA-7B's layers: 12.7 and 13.0 GiB against 9.8);
# "auto" leaves a little more.
ONE_PROCESS_GPU_ROOM = 1.4
# What "auto" chooses from, least recomputation first.
CHECKPOINTING_CHOICES = (False, 4, 2, True)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


@dataclass(frozen=True)
class Shape:
    hidden: int
    ffn: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int  # embedding rows, padding included

    @classmethod
    def of(cls, model_config: dict, vocab_rows: int) -> "Shape":
        heads = model_config["num_attention_heads"]
        return cls(model_config["hidden_size"], model_config["intermediate_size"], model_config["num_hidden_layers"], heads, model_config.get("num_key_value_heads") or heads, vocab_rows)

    @property
    def kv(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each of a decoder layer's linear modules, by peft's names for them."""
        h, f, kv = self.hidden, self.ffn, self.kv
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h), "gate_proj": (h, f), "up_proj": (h, f), "down_proj": (f, h)}

    def parameters(self) -> int:
        per_layer = sum(i * o for i, o in self.linear_shapes().values()) + 2 * self.hidden
        return self.layers * per_layer + 2 * self.vocab * self.hidden + self.hidden


def _adapted(shape: Shape, lora: dict) -> list[tuple[int, int]]:
    """(in, out) of each linear module of a decoder layer that LoRA adapts."""
    linear = shape.linear_shapes()
    return [linear[m] for m in lora["target_modules"] if m in linear]


def trainable(shape: Shape, config: dict) -> int:
    """Parameters that train: all of them in full training; with LoRA the adapters and the copies
    peft makes of the modules it trains in full (the originals stay, frozen)."""
    if config["method"] == "full":
        return shape.parameters()
    lora = config["lora"]
    adapters = shape.layers * sum(lora["r"] * (i + o) for i, o in _adapted(shape, lora))
    copies = sum(shape.vocab * shape.hidden for m in lora.get("modules_to_save", []) if m in ("embed_tokens", "lm_head"))
    return adapters + copies


def _layer_activation_bytes(shape: Shape, config: dict, p: int) -> int:
    """Bytes per token one decoder layer saves for its backward pass: the norms' inputs, an fp32
    copy in half precision, and their scales; the attention's projections, rotated q and k, its
    output and a log-sum-exp per head; the MLP's gate, up and product. A frozen linear module saves
    no input (nothing computes its weight's gradient); a LoRA adapter saves its input's dropout copy
    and mask, and its down-projected input."""
    h, f, kv, heads = shape.hidden, shape.ffn, shape.kv, shape.heads
    upcast = 4 * h if p < FULL else 0
    fixed = 8 + 4 * heads
    if config["method"] == "full":
        return p * (8 * h + 4 * f + 2 * kv) + upcast + fixed
    lora = config["lora"]
    targets = _adapted(shape, lora)
    dropout = sum((p + 1) * i for i, _ in targets) if lora.get("dropout", 0) > 0 else 0
    return p * (6 * h + 3 * f + 2 * kv + len(targets) * lora["r"]) + 4 * h + dropout + fixed


def _with(config: dict, **deepspeed) -> dict:
    return {**config, "deepspeed": {**config["deepspeed"], **deepspeed}}


def gpu_room(zero_stage: int) -> float:
    """How many times its estimate a stage under `zero_stage` leaves free on the GPU when it chooses."""
    return ZERO_3_GPU_ROOM if zero_stage == 3 else GPU_ROOM


def _least_checkpointing(shape: Shape, config: dict, processes: int, device_bytes: int, room: float) -> tuple[bool | int, float]:
    """The least recomputation the stage's `gradient_checkpointing` allows (any under "auto") whose
    estimate fits `device_bytes` with `room` times it to spare, and what it needs with that room;
    where none fits, the most recomputation allowed."""
    setting = config["deepspeed"]["gradient_checkpointing"]
    for choice in CHECKPOINTING_CHOICES if setting == "auto" else (setting,):
        needs = room * estimate(shape, _with(config, gradient_checkpointing=choice), processes)["total"]
        if needs <= device_bytes:
            break
    return choice, needs


def choose_zero_stage(shape: Shape, config: dict, processes: int, device_bytes: int | None, resumed_stage: int | None, events) -> int:
    """The stage's `zero_stage`, with "auto" resolved and said: ZeRO-2 where its estimate, at the
    least recomputation the checkpointing setting allows, fits `device_bytes` with gpu_room(2) to
    spare, else ZeRO-3. Under ZeRO-2 every rank keeps the weights whole, so its steps run without
    ZeRO-3's gathering of each module's weights before every use (and 1.5 times the
    communication); ZeRO-3 partitions them too, which a 7B trained in full on 8 x 32 GB needs.
    ZeRO-2 in one process, where ZeRO-3 has no rank to partition over; ZeRO-3 without a GPU to
    measure against. A resumed run keeps the stage its checkpoint was written under
    (`resumed_stage`), since DeepSpeed lays out each stage's checkpoint in its own way."""
    setting = config["deepspeed"]["zero_stage"]
    if setting != "auto":
        return setting
    if resumed_stage is not None:
        events.log(f"ZeRO stage (auto): {resumed_stage}, the stage the checkpoint resumed from was written under")
        return resumed_stage
    if processes == 1:
        events.log("ZeRO stage (auto): 2, in one process ZeRO-3 has no rank to partition the weights over")
        return 2
    if not device_bytes:
        events.log("ZeRO stage (auto): 3, with no GPU to fit ZeRO-2 on")
        return 3
    _, needs = _least_checkpointing(shape, _with(config, zero_stage=2), processes, device_bytes, gpu_room(2))
    if needs <= device_bytes:
        events.log(f"ZeRO stage (auto): 2, {gpu_room(2)} times its estimate is {_gib(needs)} of the GPU's {_gib(device_bytes)}")
        return 2
    events.log(f"ZeRO stage (auto): 3, {gpu_room(2)} times ZeRO-2's estimate would be {_gib(needs)}, over the GPU's {_gib(device_bytes)}")
    return 3


def choose_checkpointing(shape: Shape, config: dict, processes: int, device_bytes: int | None, events, room: float | None = None) -> bool | int:
    """The stage's `gradient_checkpointing`, with "auto" resolved and said: the least recomputation
    whose estimate fits `device_bytes` with `room` times it to spare (its ZeRO stage's gpu_room
    unless given); every layer without a GPU to measure against, or where nothing leaves that room
    (with a warning)."""
    setting = config["deepspeed"]["gradient_checkpointing"]
    if setting != "auto":
        return setting
    if not device_bytes:
        events.log("gradient checkpointing (auto): every decoder layer, with no GPU to fit")
        return True
    room = room or gpu_room(config["deepspeed"]["zero_stage"])
    choice, needs = _least_checkpointing(shape, config, processes, device_bytes, room)
    if needs <= device_bytes:
        events.log(f"gradient checkpointing (auto): {describe_checkpointing(choice)}, {room} times its estimate is {_gib(needs)} of the GPU's {_gib(device_bytes)}")
    else:
        events.log(
            f"gradient checkpointing (auto): every decoder layer, and {room} times its estimate is still {_gib(needs)}, over the GPU's {_gib(device_bytes)}; "
            "the GPU peaks measured so far needed that room: if it runs out of memory, lower micro_batch_size",
            level="warning",
        )
    return choice


def checkpoint_every(gradient_checkpointing: bool | int) -> int | None:
    """Every how many decoder layers one recomputes its forward pass in the backward one
    (transformers' `every_n_layers`: layers 0, n, 2n, ...): every one for `true`, every n-th for n,
    none for `false`."""
    if gradient_checkpointing is False:
        return None
    return 1 if gradient_checkpointing is True else gradient_checkpointing


def describe_checkpointing(gradient_checkpointing: bool | int) -> str:
    every = checkpoint_every(gradient_checkpointing)
    return "none" if not every else "every decoder layer" if every == 1 else f"one decoder layer in {every}"


def checkpointed_layers(layers: int, gradient_checkpointing: bool | int) -> int:
    """How many of `layers` decoder layers recompute their forward pass."""
    every = checkpoint_every(gradient_checkpointing)
    return math.ceil(layers / every) if every else 0


def activation_bytes(shape: Shape, config: dict, tokens: int, p: int, gradient_checkpointing: bool | int) -> int:
    """A micro-batch's activations at their peak. A checkpointed layer keeps only its input until the
    backward pass recomputes it; the others keep all they saved. Recomputing adds a layer's worth on
    top only when the last layer is checkpointed: below it, the layers above have already been freed.
    Around the layers: the embeddings' output, the final norm, the LM head's input; and the backward
    pass's working set in a layer: the gradients of its input and output and of the MLP's gate and up."""
    per_layer = _layer_activation_bytes(shape, config, p)
    every = checkpoint_every(gradient_checkpointing)
    checkpointed = checkpointed_layers(shape.layers, gradient_checkpointing)
    recomputed = per_layer if every and (shape.layers - 1) % every == 0 else 0
    around = (p * 3 * shape.hidden if config["method"] == "full" else p * 2 * shape.hidden) + 256
    working = p * (2 * shape.hidden + 2 * shape.ffn)
    return tokens * (checkpointed * p * shape.hidden + (shape.layers - checkpointed) * per_layer + recomputed + around + working)


def loss_bytes(shape: Shape, tokens: int, p: int) -> int:
    """The logits and their gradient in the model's precision, and two chunks' fp32 work at a time
    (loss.py: a chunk's upcast and its softmax or exponentials)."""
    return 2 * tokens * shape.vocab * p + 2 * min(tokens, loss.CHUNK_TOKENS) * shape.vocab * 4


def deepspeed_buffer_bytes(shape: Shape, stage: int, processes: int, p: int) -> int:
    """The gradient buckets (deepspeed_config.py), and under ZeRO-3 across ranks the weights it holds
    gathered at the peak: the largest module (the LM head), the prefetched values, and the last two
    decoder layers, which it keeps for their reuse in the backward pass (stage3_max_reuse_distance)."""
    buckets = deepspeed_config.reduction_buffers(stage) * deepspeed_config.REDUCE_BUCKET_VALUES * p
    if stage < 3 or processes == 1:
        return buckets
    layer = sum(i * o for i, o in shape.linear_shapes().values())
    return buckets + (shape.vocab * shape.hidden + deepspeed_config.PREFETCH_BUCKET_VALUES + 2 * layer) * p


def estimate(shape: Shape, config: dict, processes: int) -> dict[str, int]:
    """Bytes on one rank's device by what holds them, and their `total` at the peak: in the backward
    pass (activations and logits) or while the optimizer steps (fp32 gradients). From ZeRO-2 on a
    rank's gradients have one buffer from the start; below, they build up as the backward pass frees
    the activations."""
    deepspeed = config.get("deepspeed") or {}
    stage = deepspeed.get("zero_stage", 0)
    p = HALF if deepspeed.get("profile") == "v100" else FULL
    mixed = p == HALF

    def per_rank(values: float, partitioned_from_stage: int) -> int:
        return int(values / processes if stage >= partitioned_from_stage else values)

    trains = trainable(shape, config)
    stored = shape.parameters() + (trains if config["method"] == "lora" else 0)
    tokens = config["micro_batch_size"] * config["block_size"]
    parts = {
        "weights": per_rank(stored * p, 3),
        "gradients": per_rank(trains * p, 2),
        "optimizer": per_rank(trains * (ADAM_BYTES + (MASTER_BYTES if mixed else 0)), 1),
        "deepspeed_buffers": deepspeed_buffer_bytes(shape, stage, processes, p),
        "activations": activation_bytes(shape, config, tokens, p, deepspeed.get("gradient_checkpointing", False)),
        "loss": loss_bytes(shape, tokens, p),
        "step_gradients": per_rank(trains * STEP_GRADIENT_BYTES, 1) if mixed else 0,
    }
    held = parts["weights"] + parts["optimizer"] + parts["deepspeed_buffers"]
    # The LM head's gradient comes first in the backward pass, beside the activations: whole, since
    # it is larger than a gradient bucket.
    head_trains = config["method"] == "full" or "lm_head" in config["lora"].get("modules_to_save", [])
    peak_state = parts["activations"] + parts["loss"] + (shape.vocab * shape.hidden * p if head_trains else 0)
    backward = parts["gradients"] + peak_state if stage >= 2 else max(parts["gradients"], peak_state)
    return {**parts, "total": held + max(backward, parts["gradients"] + parts["step_gradients"])}


# What to change when a stage does not fit, under DeepSpeed and in one process (sft).
DEEPSPEED_LEVERS = "lower micro_batch_size, checkpoint more layers (deepspeed.gradient_checkpointing) or add GPUs under ZeRO-3"
ONE_PROCESS_LEVERS = "lower micro_batch_size or cutoff_len, or checkpoint more layers (sft.gradient_checkpointing)"


def as_estimated(config: dict) -> dict:
    """A stage's config as the estimate reads it: sft's as LoRA on sequences of cutoff_len tokens."""
    return {**config, "method": "lora", "block_size": config["cutoff_len"]} if "cutoff_len" in config else config


def as_one_process(config: dict, on_gpu: bool) -> dict:
    """A one-process LoRA stage's config (sft) as the estimate reads a DeepSpeed stage's: no ZeRO, in
    half precision on a GPU (its frozen base is loaded so, and autocast computes in it)."""
    deepspeed = {"zero_stage": 0, "profile": "v100" if on_gpu else "cpu", "gradient_checkpointing": config["gradient_checkpointing"]}
    return {**as_estimated(config), "deepspeed": deepspeed}


def plan_one_process(shape: Shape, config: dict, device_bytes: int | None, events) -> tuple[bool | int, dict[str, int]]:
    """A one-process stage's `gradient_checkpointing` with "auto" resolved for a GPU of
    `device_bytes` (None: no GPU), with the room autocast's measured peak needs, and its estimate,
    said; refused where it cannot fit."""
    estimated_as = as_one_process(config, device_bytes is not None)
    choice = choose_checkpointing(shape, estimated_as, 1, device_bytes, events, ONE_PROCESS_GPU_ROOM)
    estimated = estimate(shape, _with(estimated_as, gradient_checkpointing=choice), 1)
    check_fits(estimated, device_bytes, events, ONE_PROCESS_LEVERS)
    return choice, estimated


def check_fits(estimated: dict[str, int], device_bytes: int | None, events, levers: str = DEEPSPEED_LEVERS) -> None:
    """Says the estimate by part. Refuses a stage whose estimate exceeds the GPU's memory by more
    than the estimate's margin, before the model loads, naming the `levers` that would make it fit;
    warns when it exceeds it by less."""
    parts = ", ".join(f"{k} {_gib(v)}" for k, v in estimated.items() if k != "total" and v)
    said = f"estimated {_gib(estimated['total'])} per rank ({parts})"
    if device_bytes is None:
        events.log(said)
        return
    said += f" against the GPU's {_gib(device_bytes)}"
    if estimated["total"] > ESTIMATE_MARGIN * device_bytes:
        raise InvalidInput(f"the stage does not fit: {said}; {levers}")
    if estimated["total"] > device_bytes:
        events.log(f"the stage may not fit: {said}; if it runs out of memory, {levers}", level="warning")
    else:
        events.log(said)
