"""The DeepSpeed config of a training stage, generated from the run config's `deepspeed` section
(profile, ZeRO stage) and its batch sizes; nothing else in the project writes one.

Every value is concrete (no "auto"), so DeepSpeed's own parser can check the file as it is, and
the Hugging Face integration only confirms that it matches the TrainingArguments."""

MAX_GRAD_NORM = 1.0  # TrainingArguments' default, stated here because both sides must agree
# Gradients are reduced across ranks through buffers of this many values, allocated whole: two
# under ZeRO-2's overlap_comm, one otherwise. DeepSpeed's default of 500M makes ZeRO-2 hold 2 GB of
# fp16 buffers on every GPU, most of it unused by LoRA's 0.4B trainable values at 7B; 50M (100 MB
# messages) still keeps NCCL at full bandwidth. A gradient larger than a buffer is reduced alone.
REDUCE_BUCKET_VALUES = 50_000_000
# ZeRO-3 gathers the next modules' weights ahead of use, this many values at a time (DeepSpeed's
# default, stated because the memory estimate counts it).
PREFETCH_BUCKET_VALUES = 50_000_000


def reduction_buffers(zero_stage: int) -> int:
    """How many gradient buckets of REDUCE_BUCKET_VALUES a rank allocates under `zero_stage`."""
    return {0: 0, 1: 1, 2: 2, 3: 1}[zero_stage]


def generate(deepspeed: dict, micro_batch_size: int, accumulation: int, world_size: int) -> dict:
    zero = {"stage": deepspeed["zero_stage"]}
    if deepspeed["zero_stage"] >= 1:
        zero["reduce_bucket_size"] = REDUCE_BUCKET_VALUES
    if deepspeed["zero_stage"] == 3:
        # The stage's final save must hold whole weights, not one shard per rank.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
        zero["stage3_prefetch_bucket_size"] = PREFETCH_BUCKET_VALUES
    if deepspeed["zero_stage"] >= 2:
        zero.update(overlap_comm=True, contiguous_gradients=True)
    return {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": micro_batch_size * accumulation * world_size,
        "gradient_clipping": MAX_GRAD_NORM,
        "zero_optimization": zero,
        # V100 (compute capability 7.0) has no bf16: fp16 with dynamic loss scaling (loss_scale 0).
        "fp16": {"enabled": deepspeed["profile"] == "v100", "loss_scale": 0, "initial_scale_power": 16, "loss_scale_window": 1000, "hysteresis": 2, "min_loss_scale": 1},
        "bf16": {"enabled": False},
        "steps_per_print": 1_000_000_000,  # progress goes through our events, not DeepSpeed's log
        "wall_clock_breakdown": False,
    }
