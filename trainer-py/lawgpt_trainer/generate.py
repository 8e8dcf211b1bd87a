"""`python -m lawgpt_trainer.generate --model DIR [--adapter DIR] [--prompt TEXT ...]`: answer legal
questions with a trained model and the shared prompt template; with no --prompt, ask interactively.
Answers stream to the terminal token by token; the model runs on the GPU when there is one.

Not a pipeline stage: a person runs it (through `npm run generate`) to try a model after training.
eval loads its models and decodes its answers in batches with the same functions."""

import argparse
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TextStreamer

from lawgpt_trainer import devices, prompt


def load(model_dir: str, adapter_dir: str | None = None):
    """Tokenizer and model, the model on the GPU in half precision when there is one (its weights
    go there straight from the files, with no full copy on the host), else on the CPU in fp32."""
    device, dtype = devices.inference()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, device_map={"": device})
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    return tokenizer, model.eval()


@torch.no_grad()
def answer(tokenizer, model, question: str, max_new_tokens: int, temperature: float, streamer=None) -> str:
    ids = prompt.prompt_ids(tokenizer, question)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": 0.9} if temperature > 0 else {"do_sample": False}
    generated = model.generate(
        input_ids=torch.tensor([ids], device=model.device),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=model.device),
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.unk_token_id,
        streamer=streamer,
        **sampling,
    )
    return tokenizer.decode(generated[0, len(ids) :], skip_special_tokens=True).strip()


def left_padded(sequences: list[list[int]], pad_id: int, device) -> dict:
    """A batch padded on the left, so that every sequence ends at the last position (where
    generation continues and the answers are scored), with positions that skip the padding."""
    width = max(len(s) for s in sequences)
    ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in sequences], device=device)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], device=device)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}


@torch.no_grad()
def greedy(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int, progress) -> list[str]:
    """What greedy decoding writes after each prompt, in the prompts' order; `progress` hears of
    every batch. Longest prompts first: a batch too large for the GPU fails at its first, before
    any progress is reported or decoding time spent, and similar lengths share batches."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    written: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        inputs = left_padded([prompts[i] for i in batch], tokenizer.unk_token_id, model.device)
        del inputs["position_ids"]  # generate derives them from the mask
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.unk_token_id)
        for i, text in zip(batch, tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)):
            written[i] = text.strip()
        progress(len(batch))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lawgpt_trainer.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model folder (merged, or the base for --adapter)")
    parser.add_argument("--adapter", help="a LoRA adapter folder to apply to --model")
    parser.add_argument("--prompt", action="append", help="a question; repeat for several; omit to ask interactively")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 for greedy decoding")
    args = parser.parse_args(argv)

    tokenizer, model = load(args.model, args.adapter)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)

    def reply(question: str) -> None:
        print("回答: ", end="", flush=True)
        answer(tokenizer, model, question, args.max_new_tokens, args.temperature, streamer)
        print()

    if args.prompt:
        for question in args.prompt:
            print(f"问题: {question}")
            reply(question)
        return 0
    print("Ask a legal question (an empty line or Ctrl-D ends).", file=sys.stderr)
    for line in iter(lambda: input("问题> "), ""):
        reply(line.strip())
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (EOFError, KeyboardInterrupt):
        sys.exit(0)
