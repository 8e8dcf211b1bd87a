"""The `merge` step: a LoRA adapter folded into its base, giving a standalone model that later
stages and users load without peft. Its embeddings must cover the tokenizer it ships with."""

import functools
from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model

from lawgpt_trainer.partitioned_save import SHARD_BYTES


def with_lora(model, lora: dict):
    """`model` with LoRA adapters as the stage config's `lora` section describes them."""
    adapted = get_peft_model(
        model,
        LoraConfig(
            r=lora["r"],
            lora_alpha=lora["alpha"],
            lora_dropout=lora["dropout"],
            target_modules=lora["target_modules"],
            modules_to_save=lora["modules_to_save"] or None,
            task_type="CAUSAL_LM",
        ),
    )
    # peft writes both embedding matrices into the adapter whenever the vocabulary grew, twice each
    # beside modules_to_save's trained copies: for a 7B, 1.6 GB more in every checkpoint the Trainer
    # saves. An adapter here is only ever loaded onto a base resized the same way (resized_base),
    # so every save of this model, the Trainer's included, leaves them out.
    adapted.save_pretrained = functools.partial(adapted.save_pretrained, save_embedding_layers=False)
    return adapted


def fold(model: PeftModel, vocab_size: int, out: Path) -> None:
    """Folds the adapter into its base and writes the standalone model to `out`."""
    merged = model.merge_and_unload()
    for name, embedding in (("input", merged.get_input_embeddings()), ("output", merged.get_output_embeddings())):
        rows = embedding.weight.shape[0]
        if rows < vocab_size:
            raise RuntimeError(f"merged model has {rows} {name} embedding rows for a {vocab_size}-token vocabulary")
    merged.save_pretrained(out, max_shard_size=SHARD_BYTES)
