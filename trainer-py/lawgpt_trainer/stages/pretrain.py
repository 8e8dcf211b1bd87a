"""pretrain: continued pretraining of the base model on the legal corpus with the merged
vocabulary, in one process or across DeepSpeed ranks. LoRA (embeddings and LM head trained in full,
as Chinese-LLaMA did, so the new vocabulary learns) ends with the adapter folded into a standalone
model; `full` trains every weight. The embeddings are grown to the vocabulary first (embeddings.py)."""

import math
from pathlib import Path

import sentencepiece as spm
from peft import PeftModel
from transformers import AutoTokenizer, LlamaForCausalLM, default_data_collator
from transformers.integrations.deepspeed import unset_hf_deepspeed_config

from lawgpt_trainer import cleaning, data, distributed, embeddings, merge, packing, training
from lawgpt_trainer import tokenizer as tok
from lawgpt_trainer.errors import InvalidInput


def resized_base(base_model: str, tokenizer) -> tuple[LlamaForCausalLM, dict]:
    # SDPA, never FlashAttention-2: the same attention runs on CPU, V100 and newer GPUs.
    model = LlamaForCausalLM.from_pretrained(base_model, attn_implementation="sdpa")
    base_tokenizer = spm.SentencePieceProcessor(model_file=str(Path(base_model) / tok.SP_FILE))
    return model, embeddings.resize_from_base(model, tokenizer, base_tokenizer)


def tokenized_blocks(request: dict, tokenizer, events) -> tuple[list, list, dict]:
    """Training and held-out blocks of the cleaned corpus, with the cleaning report: from the
    block cache when the orchestrator found them there (`inputs.blocks`), else tokenized here and
    offered to the cache with a `blocks` event."""
    block_size, inputs = request["config"]["block_size"], request["inputs"]
    if "blocks" in inputs:
        train, heldout, cleaned = packing.load(Path(inputs["blocks"]), block_size)
        events.log(f"{len(train)} blocks of {block_size} tokens from the block cache")
        return train, heldout, {**cleaned, "blocks_from_cache": 1}
    docs, cleaned = cleaning.read_corpus(request)
    train_docs, heldout_docs = data.split_documents(docs, request["split"]["heldout_percent"])
    train = packing.pack(tokenizer, train_docs, block_size)
    if not train:
        raise InvalidInput(f"the corpus yields no full block of {block_size} tokens")
    heldout = packing.pack(tokenizer, heldout_docs, block_size)
    events.log(f"{len(train_docs)} documents -> {len(train)} blocks of {block_size} tokens")
    if distributed.is_main():
        packing.save(Path(request["output_dir"]) / "blocks", train, heldout, block_size, cleaned)
        events.emit("blocks", path="blocks")
    return train, heldout, {**cleaned, "blocks_from_cache": 0}


def run(request: dict, events) -> tuple[dict, dict]:
    config, inputs, out = request["config"], request["inputs"], Path(request["output_dir"])
    tokenizer = AutoTokenizer.from_pretrained(inputs["tokenizer"])
    model, resized = resized_base(inputs["base_model"], tokenizer)
    if config["method"] == "lora":
        model = merge.with_lora(model, config["lora"])

    blocks, heldout, cleaned = tokenized_blocks(request, tokenizer, events)
    heldout = heldout[: config["eval_blocks"]]
    eval_dataset = packing.lm_dataset(heldout) if heldout else None
    trainer, trained = training.train(model, packing.lm_dataset(blocks), default_data_collator, request, events, len(tokenizer), eval_dataset)
    # The phase's held-out loss, for the run report and the config's gates: already scored when the
    # last step was a checkpoint, else scored now (collective, like saving; every rank decides alike).
    heldout_loss = trained["eval_losses"].get(trainer.state.global_step)
    if heldout_loss is None and eval_dataset:
        heldout_loss = trainer.evaluate()["eval_loss"]

    # Saving is collective (ZeRO-3 gathers the shards); what follows is rank 0's alone.
    trainer.save_model(str(out / ("adapter" if config["method"] == "lora" else "model")))
    if not distributed.is_main():
        return {}, {}
    if config["method"] == "lora":
        # The training run's DeepSpeed config would make from_pretrained partition the base model
        # across ranks that have finished; the fold happens in this process alone.
        unset_hf_deepspeed_config()
        base, _ = resized_base(inputs["base_model"], tokenizer)
        merge.fold(PeftModel.from_pretrained(base, out / "adapter"), len(tokenizer)).save_pretrained(out / "model")
    tok.save_with_model(tokenizer, inputs["tokenizer"], out / "model")
    metrics = {
        **cleaned,
        **resized,
        "train_blocks": len(blocks),
        "processes": trained["processes"],
        **training.loss_metrics(trained),
    }
    if heldout_loss is not None:
        metrics.update(heldout_loss=heldout_loss, heldout_perplexity=math.exp(heldout_loss))
    return {"model": "model"}, metrics
