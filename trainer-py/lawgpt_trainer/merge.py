"""The `merge` step: a LoRA adapter folded into its base, giving a standalone model that later
stages and users load without peft. Its embeddings must cover the tokenizer it ships with."""

import weakref
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
    if set(TRAINED_EMBEDDINGS) <= set(lora["modules_to_save"] or ()):
        # peft also writes the embedding matrices into the adapter whenever the vocabulary grew,
        # beside modules_to_save's trained copies: for a 7B under ZeRO-2, 1.6 GB more in every
        # checkpoint. With both trained copies in it, the adapter needs none of that on a base
        # resized as the stages resize it (resized_base), so every save of this model, the
        # Trainer's included, leaves them out.
        adapted.save_pretrained = _saving_without_embedding_layers(weakref.ref(adapted))
    return adapted


TRAINED_EMBEDDINGS = ("embed_tokens", "lm_head")


def _saving_without_embedding_layers(model: weakref.ref):
    # A weak reference: a model that refers to itself is freed only by a garbage collection, not
    # when the stage drops it before the fold loads the base again.
    def save_pretrained(*args, **kwargs):
        return type(model()).save_pretrained(model(), *args, **kwargs, save_embedding_layers=False)

    return save_pretrained


def fold(model: PeftModel, vocab_size: int, out: Path) -> None:
    """Folds the adapter into its base and writes the standalone model to `out`."""
    merged = model.merge_and_unload()
    for name, embedding in (("input", merged.get_input_embeddings()), ("output", merged.get_output_embeddings())):
        rows = embedding.weight.shape[0]
        if rows < vocab_size:
            raise RuntimeError(f"merged model has {rows} {name} embedding rows for a {vocab_size}-token vocabulary")
    merged.save_pretrained(out, max_shard_size=SHARD_BYTES)
