"""pretrain: continued pretraining of the base model on the legal corpus with the merged
vocabulary, in one process or across DeepSpeed ranks. LoRA (embeddings and LM head trained in full,
as Chinese-LLaMA did, so the new vocabulary learns) ends with the adapter folded into a standalone
model; `full` trains every weight. The embeddings are grown to the vocabulary first (embeddings.py)."""

import math
import time
from pathlib import Path

import sentencepiece as spm
from peft import PeftModel
from transformers import AutoTokenizer, LlamaForCausalLM, default_data_collator
from transformers.integrations.deepspeed import unset_hf_deepspeed_config

from lawgpt_trainer import data, distributed, embeddings, merge, packing, partitioned_save, rank_zero, startup, training
from lawgpt_trainer import tokenizer as tok
from lawgpt_trainer.errors import InvalidInput


def resized_base(base_model: str, tokenizer, options: dict) -> tuple[LlamaForCausalLM, dict]:
    """The base model, loaded with `options` (training.load_options to train, fold_options to fold
    into), its embeddings grown to the merged vocabulary; with the host memory the load itself took
    on this rank and what the rank held before it."""
    before = training.host_rss_bytes()
    # SDPA, never FlashAttention-2: the same attention runs on CPU, V100 and newer GPUs.
    model = LlamaForCausalLM.from_pretrained(base_model, attn_implementation="sdpa", **options)
    loaded = training.host_rss_bytes() - before
    base_tokenizer = spm.SentencePieceProcessor(model_file=str(Path(base_model) / tok.SP_FILE))
    return model, {**embeddings.resize_from_base(model, tokenizer, base_tokenizer), "model_load_host_bytes": loaded, "host_rss_before_model_bytes": before}


BLOCKS_DIR = "blocks"


def tokenized_blocks(request: dict, tokenizer, events) -> tuple[packing.Blocks, packing.Blocks, dict]:
    """Training blocks and `eval_blocks` held-out blocks (spread over them) of the cleaned corpus,
    with the cleaning report: from the block cache when the orchestrator found them there (`inputs.blocks`),
    else prepared here by rank 0 for every rank and offered to the cache with a `blocks` event."""
    config, inputs = request["config"], request["inputs"]
    block_size, eval_blocks = config["block_size"], config["eval_blocks"]
    if "blocks" in inputs:
        train, heldout, index = packing.load(Path(inputs["blocks"]), block_size, eval_blocks)
        events.log(f"{len(train)} blocks of {block_size} tokens from the block cache")
        return train, heldout, {**index["report"], "blocks_from_cache": 1}
    folder = Path(request["output_dir"]) / BLOCKS_DIR
    started = time.perf_counter()
    if distributed.is_main():
        rank_zero.prepare_for_every_rank(folder, lambda: packing.prepare(inputs["corpus"], request["cleaning"], request["split"]["heldout_percent"], tokenizer, block_size, folder, bad=data.BadRecords.of(request, events)))
    else:
        rank_zero.wait_for_rank_0(folder, packing.INDEX_FILE, "the blocks")
    train, heldout, index = packing.load(folder, block_size, eval_blocks)
    if not len(train):
        raise InvalidInput(f"the corpus yields no full block of {block_size} tokens")
    documents = index["splits"]["train"]["documents"]
    events.log(f"{documents} documents -> {len(train)} blocks of {block_size} tokens in {time.perf_counter() - started:.1f} s")
    events.emit("blocks", path=BLOCKS_DIR)
    return train, heldout, {**index["report"], "blocks_from_cache": 0}


def run(request: dict, events) -> tuple[dict, dict]:
    config, inputs, out = request["config"], request["inputs"], Path(request["output_dir"])
    tokenizer = AutoTokenizer.from_pretrained(inputs["tokenizer"])
    blocks, heldout, cleaned = tokenized_blocks(request, tokenizer, events)
    startup.mark("data")
    eval_dataset = heldout if len(heldout) else None
    deepspeed, planned = training.device_memory_plan(request, inputs["base_model"], len(tokenizer), events)
    args = training.arguments(request, evaluates=eval_dataset is not None, deepspeed=deepspeed)
    zero3 = bool(deepspeed) and deepspeed["zero_stage"] == 3
    lora = config["method"] == "lora"
    model, loaded = resized_base(inputs["base_model"], tokenizer, training.load_options(config, inputs["base_model"], partitioned=zero3, lora=lora))
    parameters = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
    if lora:
        model = merge.with_lora(model, config["lora"])
        training.trainable_in_fp32(model, config)
    startup.mark("model")

    trainer, trained = training.train(model, args, blocks, default_data_collator, request, events, len(tokenizer), training.compiles(config, deepspeed), eval_dataset)
    # The phase's held-out loss, for the run report and the config's gates: already scored when the
    # last step was a checkpoint, else scored now (collective, like saving; every rank decides alike).
    heldout_loss = trained["eval_losses"].get(trainer.state.global_step)
    if heldout_loss is None and eval_dataset:
        heldout_loss = trainer.evaluate()["eval_loss"]

    # Saving is collective (ZeRO-3 gathers the shards); what follows is rank 0's alone.
    if zero3 and not lora:
        partitioned_save.save(trainer.model, out / "model")
    else:
        trainer.save_model(str(out / ("adapter" if lora else "model")))
    if not distributed.is_main():
        return {}, {}
    if lora:
        # The trained copy goes before the base comes back for the fold: never two models at once.
        accelerator = trainer.accelerator
        del model, trainer
        training.release(accelerator)
        # The run's DeepSpeed config would make from_pretrained partition the base across ranks
        # that have finished; the fold happens in this process alone.
        unset_hf_deepspeed_config()
        base, _ = resized_base(inputs["base_model"], tokenizer, training.fold_options(config))
        merge.fold(PeftModel.from_pretrained(base, out / "adapter"), len(tokenizer), out / "model")
    tok.save_with_model(tokenizer, inputs["tokenizer"], out / "model")
    # Rank 0's memory, the fold's included.
    memory = training.memory_metrics(parameters, loaded.pop("host_rss_before_model_bytes"), loaded.pop("model_load_host_bytes"))
    metrics = {
        **cleaned,
        **loaded,
        **memory,
        **planned,
        "train_blocks": len(blocks),
        **training.loss_metrics(trained, config["block_size"]),
    }
    if heldout_loss is not None:
        metrics.update(heldout_loss=heldout_loss, heldout_perplexity=math.exp(heldout_loss))
    return {"model": "model"}, metrics
