"""base: the starting point of a run, made locally (no hub downloads): the packaged LLaMA-family
tokenizer, and a tiny LLaMA initialised deterministically from a seed."""

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lawgpt_trainer import tokenizer as tok


def new_model(config: dict, tokenizer) -> LlamaForCausalLM:
    """A LLaMA of the config's shape for the tokenizer, initialised from `seed`, untied as LLaMA is."""
    torch.manual_seed(config["seed"])
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=config["hidden_size"],
            intermediate_size=config["intermediate_size"],
            num_hidden_layers=config["num_hidden_layers"],
            num_attention_heads=config["num_attention_heads"],
            num_key_value_heads=config["num_key_value_heads"],
            max_position_embeddings=config["max_position_embeddings"],
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            tie_word_embeddings=False,
        )
    )


def run(request: dict, events) -> tuple[dict, dict]:
    config, out = request["config"], Path(request["output_dir"])
    proto = tok.copy_packaged_base(config["tokenizer"], out / "tokenizer")
    hf_tokenizer = tok.save_tokenizer(proto, out / "tokenizer")
    events.progress(1, 2)

    model = new_model(config, hf_tokenizer)
    model.save_pretrained(out / "model")
    tok.save_with_model(hf_tokenizer, out / "tokenizer", out / "model")
    events.progress(2, 2)
    parameters = sum(p.numel() for p in model.parameters())
    return {"tokenizer": "tokenizer", "model": "model"}, {"vocab_size": len(hf_tokenizer), "parameters": parameters}
