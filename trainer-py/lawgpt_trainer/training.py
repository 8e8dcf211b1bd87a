"""What pretrain and sft share: device and precision choice, the Hugging Face Trainer setup, and
progress events from inside the training loop."""

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from lawgpt_trainer.events import EventStream


def precision() -> dict:
    """fp16 on GPUs without bf16 (V100 is compute capability 7.0; `is_bf16_supported()` can claim
    otherwise), bf16 on newer GPUs, fp32 on CPU."""
    if not torch.cuda.is_available():
        return {"use_cpu": True}
    major, _ = torch.cuda.get_device_capability()
    return {"bf16": True} if major >= 8 else {"fp16": True}


class ProgressEvents(TrainerCallback):
    def __init__(self, events: EventStream):
        self.events = events

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self.events.progress(state.global_step, state.max_steps, logs["loss"], logs.get("learning_rate"))


class LossHistory(TrainerCallback):
    def __init__(self):
        self.losses: list[float] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))


def train(model, dataset, collator, config: dict, work_dir: str, events: EventStream) -> list[float]:
    """Runs the configured number of optimizer steps and returns the logged losses."""
    args = TrainingArguments(
        output_dir=work_dir,
        max_steps=config["max_steps"],
        per_device_train_batch_size=config["micro_batch_size"],
        gradient_accumulation_steps=config["gradient_accumulation_steps"],
        learning_rate=config["learning_rate"],
        warmup_steps=config["warmup_steps"],
        lr_scheduler_type="cosine",
        logging_steps=config["logging_steps"],
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=config["seed"],
        data_seed=config["seed"],
        dataloader_num_workers=0,
        remove_unused_columns=False,
        **precision(),
    )
    history = LossHistory()
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        callbacks=[ProgressEvents(events), history],
    )
    trainer.train()
    return history.losses
