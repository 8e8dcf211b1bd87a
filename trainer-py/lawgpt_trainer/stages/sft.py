"""sft: instruction tuning with LoRA on lawyer consultations, judicial-exam questions, Alpaca-shape
instructions and knowledge-graph records; the loss covers the response tokens only. In one process,
or data parallel under DeepSpeed (rank 0 encodes the samples for every rank, and folds). Writes the
adapter and the standalone merged model."""

from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.integrations.deepspeed import unset_hf_deepspeed_config

from lawgpt_trainer import data, distributed, encoded_samples, merge, prompt, rank_zero, startup, training
from lawgpt_trainer.prompt import IGNORE_INDEX, encode
from lawgpt_trainer import tokenizer as tok
from lawgpt_trainer.errors import InvalidInput

SAMPLES_DIR = "samples"


def pad_collator(pad_id: int):
    def collate(batch: list[dict]) -> dict:
        width = max(len(item["input_ids"]) for item in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, item in enumerate(batch):
            length = len(item["input_ids"])
            input_ids[row, :length] = torch.as_tensor(item["input_ids"])
            labels[row, :length] = torch.as_tensor(item["labels"])
            attention_mask[row, :length] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}

    return collate


def samples(request: dict, bad: data.BadRecords) -> tuple[list[data.Sample], int]:
    """Every instruction sample the run's data provides: consultations, the training part of the
    exam questions, Alpaca-shape instructions and questions on knowledge-graph entities, each source
    optional; and how many were left out for quoting a held-out exam question (eval scores it:
    training on it would inflate the figure, and bar-exam questions travel from one collection to
    another)."""
    config, inputs = request["config"], request["inputs"]
    # Read in this order, so that with on_bad_record=fail the first bad record named is the first one met.
    dialogue = data.read_dialogue(inputs["dialogue"], config["dialogue_answers"], config["max_dialogue_records"], bad) if "dialogue" in inputs else []
    exam_train, heldout = data.split_exam(data.read_exam(inputs["exam"], bad), data.exam_heldout_percent(request["split"])) if "exam" in inputs else ([], [])
    instructions = data.read_instructions(inputs["instructions"], config["max_instruction_records"], bad) if "instructions" in inputs else []
    entries = data.read_knowledge(inputs["knowledge"], config["max_knowledge_records"], bad) if "knowledge" in inputs else []
    knowledge = [sample for entry in entries for sample in prompt.knowledge_samples(entry)]
    quotes = data.quotes_any(heldout)
    kept = {name: [s for s in found if not quotes(s)] for name, found in (("dialogue", dialogue), ("instructions", instructions), ("knowledge", knowledge))}
    exam = [prompt.exam_sample(q) for q in exam_train[: config["max_exam_records"]]]
    quoting = len(dialogue) + len(instructions) + len(knowledge) - sum(len(found) for found in kept.values())
    return kept["dialogue"] + exam + kept["instructions"] + kept["knowledge"], quoting


def encoded(request: dict, tokenizer, events) -> encoded_samples.Samples:
    """The run's samples, encoded by rank 0 for every rank (packed, with `packing`); their index
    counts what was left out on the way."""
    config, folder = request["config"], Path(request["output_dir"]) / SAMPLES_DIR

    def prepare() -> None:
        bad = data.BadRecords.of(request, events)
        found, quoting_exam = samples(request, bad)
        if quoting_exam:
            events.log(f"{quoting_exam} instruction samples left out: they quote a held-out exam question, which eval scores", level="warning")
        encoded_samples.write((encode(tokenizer, s, config["cutoff_len"]) for s in found), folder, {"quoting_exam": quoting_exam, "skipped_records": bad.count})

    if distributed.is_main():
        rank_zero.prepare_for_every_rank(folder, prepare)
    else:
        rank_zero.wait_for_rank_0(folder, encoded_samples.INDEX_FILE, "the instruction samples")
    return encoded_samples.Samples(folder, config["cutoff_len"] if config["packing"] else None)


def run(request: dict, events) -> tuple[dict, dict]:
    config, out = request["config"], Path(request["output_dir"])
    tokenizer = AutoTokenizer.from_pretrained(request["inputs"]["model"])
    dataset = encoded(request, tokenizer, events)
    counts = dataset.index
    if not counts["samples"]:
        raise InvalidInput(f"no sample keeps a response token within cutoff_len={config['cutoff_len']}")
    if counts["over_cutoff"]:
        events.log(f"{counts['over_cutoff']} of {counts['samples'] + counts['over_cutoff']} instruction samples left out: the prompt alone fills sft.cutoff_len ({config['cutoff_len']} tokens)", level="warning")
    events.log(f"{counts['samples']} instruction samples in {len(dataset)} sequences")
    startup.mark("data")

    # Loaded once the data is known to be usable and the model to fit: a bad file fails the stage
    # before the model costs anything. Under DeepSpeed the arguments come first (training.arguments).
    model_dir = request["inputs"]["model"]
    deepspeed, planned = training.device_memory_plan(request, model_dir, len(tokenizer), events)
    checkpointing = False
    if not deepspeed:
        checkpointing, planned = training.one_process_memory_plan(request, model_dir, len(tokenizer), events)
    args = training.arguments(request, evaluates=False, deepspeed=deepspeed, gradient_checkpointing=checkpointing)
    before = training.host_rss_bytes()
    zero3 = bool(deepspeed) and deepspeed["zero_stage"] == 3
    model = AutoModelForCausalLM.from_pretrained(model_dir, **training.load_options(config, model_dir, partitioned=zero3, lora=True))
    loaded = training.host_rss_bytes() - before
    parameters = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
    model = merge.with_lora(model, config["lora"])
    training.trainable_in_fp32(model, config)
    startup.mark("model")
    trainer, trained = training.train(model, args, dataset, pad_collator(tokenizer.unk_token_id), request, events, len(tokenizer), training.compiles(config, deepspeed))

    if deepspeed:
        # Collective: under ZeRO-3 the ranks gather the adapter's shards.
        trainer.save_model(str(out / "adapter"))
        if not distributed.is_main():
            return {}, {}
    else:
        model.save_pretrained(out / "adapter")
    # Folded into the base as stored, not into the copy trained on (half precision on a GPU); the
    # trained copy goes first, so that the process never holds two models.
    accelerator = trainer.accelerator
    del model, trainer
    training.release(accelerator)
    # The run's DeepSpeed config would make from_pretrained partition the base across ranks that
    # have finished; the fold happens in this process alone.
    unset_hf_deepspeed_config()
    base = AutoModelForCausalLM.from_pretrained(model_dir, **training.fold_options(config))
    merge.fold(PeftModel.from_pretrained(base, out / "adapter"), len(tokenizer), out / "model")
    tok.save_with_model(tokenizer, model_dir, out / "model")
    metrics = {"train_samples": counts["samples"], "samples_over_cutoff": counts["over_cutoff"], "samples_quoting_exam": counts["quoting_exam"], "skipped_records": counts["skipped_records"], "train_sequences": len(dataset), **training.loss_metrics(trained, config["cutoff_len"]), **training.memory_metrics(parameters, before, loaded), **planned}
    return {"adapter": "adapter", "model": "model"}, metrics
