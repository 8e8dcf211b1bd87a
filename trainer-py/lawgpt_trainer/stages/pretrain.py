"""pretrain: continued pretraining of the base model on the legal corpus with the merged
vocabulary; the embeddings are grown to that vocabulary first (see embeddings.py)."""

from pathlib import Path

import sentencepiece as spm
from transformers import AutoTokenizer, LlamaForCausalLM, default_data_collator

from lawgpt_trainer import data, embeddings, packing, training
from lawgpt_trainer import tokenizer as tok
from lawgpt_trainer.errors import InvalidInput


def run(request: dict, events) -> tuple[dict, dict]:
    config, inputs, out = request["config"], request["inputs"], Path(request["output_dir"])
    tokenizer = AutoTokenizer.from_pretrained(inputs["tokenizer"])
    model = LlamaForCausalLM.from_pretrained(inputs["base_model"])
    base_tokenizer = spm.SentencePieceProcessor(model_file=str(Path(inputs["base_model"]) / tok.SP_FILE))
    resized = embeddings.resize_from_base(model, tokenizer, base_tokenizer)

    train_docs, heldout_docs = data.split_documents(data.read_corpus(inputs["corpus"]), request["split"]["heldout_percent"])
    blocks = packing.pack(tokenizer, train_docs, config["block_size"])
    if not blocks:
        raise InvalidInput(f"the corpus yields no full block of {config['block_size']} tokens")
    events.log(f"{len(train_docs)} documents -> {len(blocks)} blocks of {config['block_size']} tokens")

    heldout = packing.pack(tokenizer, heldout_docs, config["block_size"])[: config["eval_blocks"]]
    eval_dataset = packing.lm_dataset(heldout) if heldout else None
    trained = training.train(model, packing.lm_dataset(blocks), default_data_collator, request, events, len(tokenizer), eval_dataset)

    model.save_pretrained(out / "model")
    tok.save_with_model(tokenizer, inputs["tokenizer"], out / "model")
    metrics = {
        **resized,
        "train_blocks": len(blocks),
        **training.loss_metrics(trained),
    }
    return {"model": "model"}, metrics
