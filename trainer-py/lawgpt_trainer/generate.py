"""`python -m lawgpt_trainer.generate --model DIR [--adapter DIR] [--prompt TEXT ...]`: answer legal
questions with a trained model and the shared prompt template; with no --prompt, ask interactively.
Answers stream to the terminal token by token; the model runs on the GPU when there is one.

Not a pipeline stage: a person runs it (through `npm run generate`) to try a model after training."""

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
