"""P8, memory of the training loss: the host memory one micro-batch's logits and loss take, from the
LM head's output through the backward pass, for the trainer's chunked loss (loss.py) and for
transformers' own ForCausalLMLoss. Same fp16 logits for both, the v100 recipe's micro-batch (8
sequences of 1,024 tokens, 4 with --quick) over a 49,984-piece vocabulary (the merged 7B vocabulary,
padded), made by a small LM head and held by nothing but the loss, as in the Trainer: transformers
can free the fp16 logits once it has upcast them, the chunked loss keeps them for its backward
pass. On a GPU the same tensors are made in GPU memory; the CPU shows what each method allocates.
Each measurement runs in a fresh process, since a process's peak resident memory only grows; the
two alternate."""

import json
import resource
import statistics
import subprocess
import sys
import time

VOCAB = 49_984
BLOCK = 1024
HIDDEN = 16  # the LM head's input: small, so that the logits are what the memory measures


def measure(method: str, sequences: int) -> dict:
    import torch
    from transformers.loss.loss_utils import ForCausalLMLoss
    from transformers.modeling_outputs import CausalLMOutput

    from lawgpt_trainer import loss

    torch.manual_seed(0)
    hidden = torch.randn(sequences, BLOCK, HIDDEN, dtype=torch.float16, requires_grad=True)
    head = torch.randn(VOCAB, HIDDEN, dtype=torch.float16)
    labels = torch.randint(0, VOCAB, (sequences, BLOCK))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    logits = torch.nn.functional.linear(hidden, head)
    logits_mib = logits.numel() * logits.element_size() / 2**20
    if method == "ours":
        value = loss.causal_lm_loss(CausalLMOutput(logits=logits), labels)
    else:
        value = ForCausalLMLoss(logits, labels, VOCAB)
    del logits
    value.backward()
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"mib": (peak - before) / 1024, "seconds": seconds, "loss": value.item(), "logits_mib": logits_mib}


def main() -> None:
    import fixtures

    p = fixtures.params()
    sequences = 4 if p["quick"] else 8
    runs = {"ours": [], "peer": []}
    for _ in range(p["repeats"]):
        for method in runs:
            done = subprocess.run([sys.executable, __file__, "--measure", method, str(sequences)], capture_output=True, text=True, check=True)
            runs[method].append(json.loads(done.stdout.splitlines()[-1]))
    losses = {round(r["loss"], 4) for method in runs for r in runs[method]}
    if len(losses) != 1:
        raise RuntimeError(f"the two losses differ: {sorted(losses)}")
    fixtures.report(
        [r["mib"] for r in runs["ours"]],
        [r["mib"] for r in runs["peer"]],
        shape=f"{sequences} x {BLOCK} x {VOCAB}",
        logits_mib=runs["ours"][0]["logits_mib"],
        ours_seconds=statistics.median(r["seconds"] for r in runs["ours"]),
        peer_seconds=statistics.median(r["seconds"] for r in runs["peer"]),
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--measure"]:
        print(json.dumps(measure(sys.argv[2], int(sys.argv[3]))))
    else:
        main()
