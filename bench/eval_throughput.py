"""P7, held-out scoring: eval's language_modelling (batched forward passes over memory-mapped
blocks) against a plain loop over the same blocks held as one tensor, with the same model and batch
size. Characters for bits per character are counted once per tokenizer, as eval does, outside the
timing. Tokens scored per second, both in this process, alternating, after a warm-up of each. The
model is made here too, as the base stage makes it (one interpreter start fewer)."""

import time
from pathlib import Path

import fixtures


def main() -> None:
    import torch

    from lawgpt_trainer import generate, packing
    from lawgpt_trainer.stages import base
    from lawgpt_trainer.stages.eval import characters, language_modelling

    p = fixtures.params()
    work = Path(p["work"]) / "p7"
    config = p["config"]
    shape = {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4}
    made = work / "base" / "out"
    base.run({"config": {**config["base"], **shape}, "output_dir": str(made)}, fixtures.NoEvents())
    tokenizer, model = generate.load(made / "model")
    block_size, batch_size, count = config["eval"]["block_size"], config["eval"]["batch_size"], 64 if p["quick"] else 256
    packing.prepare(str(fixtures.corpus(p)), config["data"]["cleaning"], config["data"]["split"]["heldout_percent"], tokenizer, block_size, work / "blocks", splits=("heldout",))
    blocks = packing.load(work / "blocks", block_size, heldout_limit=count)[1]
    rows = torch.from_numpy(blocks.rows(0, len(blocks)))

    @torch.no_grad()
    def plain() -> None:
        for start in range(0, len(rows), batch_size):
            ids = rows[start : start + batch_size]
            model(input_ids=ids, labels=ids).loss.item()

    def timed(score) -> float:
        started = time.perf_counter()
        score()
        return len(blocks) * block_size / (time.perf_counter() - started)

    chars = characters(tokenizer, blocks)
    ours_score = lambda: language_modelling(model, blocks, chars, batch_size)  # noqa: E731
    timed(ours_score), timed(plain)
    ours, peer = [], []
    for _ in range(p["repeats"]):
        ours.append(timed(ours_score))
        peer.append(timed(plain))
    fixtures.report(ours, peer, blocks=len(blocks), block_size=block_size, batch_size=batch_size, device=str(model.device))


if __name__ == "__main__":
    main()
