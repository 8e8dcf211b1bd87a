"""P4, corpus preparation: packing.prepare with N worker processes against the usual Hugging Face
recipe, datasets.map(batched=True, num_proc=N) for cleaning and tokenizing and again for cutting
blocks (Chinese-LLaMA's group_texts), with the same merged tokenizer and block size on the same
files. Throughput is characters of corpus per second; peak memory (PSS of the process tree) is
measured on the corpus and on a copy four times its size, where it must stay flat.

Every measurement runs in a fresh interpreter (`--one`), so that none inherits another's memory."""

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fixtures


def sized_corpus(p: dict, scale: int) -> Path:
    """The shared corpus (every sixteenth file with --quick), or `scale` copies of it, each document
    headed by its copy's number so that deduplication keeps them all."""
    folder = Path(p["work"]) / f"corpus-{'quick-' if p['quick'] else ''}{scale}x"
    if (folder / ".complete").is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    files = sorted(f for f in fixtures.corpus(p).rglob("*") if f.suffix in (".md", ".txt"))[:: 16 if p["quick"] else 1]
    for copy in range(scale):
        for f in files:
            target = folder / f"copy-{copy}" / f.relative_to(fixtures.corpus(p))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f"第{copy + 1}份\n" + f.read_text("utf-8"), "utf-8")
    (folder / ".complete").touch()
    return folder


def ours(corpus: Path, tokenizer, config: dict, processes: int, out: Path) -> int:
    from lawgpt_trainer import packing

    index = packing.prepare(str(corpus), config["data"]["cleaning"], config["data"]["split"]["heldout_percent"], tokenizer, config["pretrain"]["block_size"], out, processes=processes)
    return sum(split["blocks"] for split in index["splits"].values())


def peer(corpus: Path, tokenizer, config: dict, processes: int, out: Path) -> int:
    from datasets import Dataset, disable_progress_bars

    from lawgpt_trainer import cleaning, data

    disable_progress_bars()
    block_size, width = config["pretrain"]["block_size"], config["data"]["cleaning"]["normalize_width"]

    def documents():
        for source in data.corpus_files(str(corpus)):
            yield {"text": data.read_document(source, None)[0]}

    def tokenize(batch):
        ids = tokenizer([cleaning.normalize(t, width) for t in batch["text"]], add_special_tokens=False)["input_ids"]
        return {"input_ids": [x + [tokenizer.eos_token_id] for x in ids]}

    def group_texts(batch):
        stream = [t for ids in batch["input_ids"] for t in ids]
        usable = len(stream) - len(stream) % block_size
        return {"input_ids": [stream[i : i + block_size] for i in range(0, usable, block_size)]}

    dataset = Dataset.from_generator(documents, cache_dir=str(out))
    dataset = dataset.map(tokenize, batched=True, num_proc=processes, remove_columns=["text"])
    return len(dataset.map(group_texts, batched=True, num_proc=processes))


def one(kind: str, corpus: str, tokenizer_dir: str, params_file: str, processes: int) -> None:
    from transformers import AutoTokenizer

    from lawgpt_trainer import data

    config = json.loads(Path(params_file).read_text("utf-8"))["config"]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    chars = sum(len(data.read_document(source, None)[0]) for source in data.corpus_files(corpus))
    with tempfile.TemporaryDirectory() as out, fixtures.PeakMemory() as memory:
        started = time.perf_counter()
        blocks = {"ours": ours, "peer": peer}[kind](Path(corpus), tokenizer, config, processes, Path(out))
        seconds = time.perf_counter() - started
    print(json.dumps({"chars_per_second": chars / seconds, "seconds": seconds, "peak_bytes": memory.peak, "blocks": blocks}))


def measure(kind: str, corpus: Path, tokenizer: Path, params_file: str, processes: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--one", kind, str(corpus), str(tokenizer), params_file, str(processes)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    p = fixtures.params()
    tokenizer = fixtures.merged_tokenizer(p)
    params_file = sys.argv[sys.argv.index("--params") + 1]
    cores = p["cores"]
    corpora = {scale: sized_corpus(p, scale) for scale in (1, 4)}
    runs = {"ours": [], "peer": [], "ours_4x": [], "ours_1_process": []}
    for i in range(p["repeats"]):
        runs["ours"].append(measure("ours", corpora[1], tokenizer, params_file, cores))
        runs["peer"].append(measure("peer", corpora[1], tokenizer, params_file, cores))
        # With --quick, the memory at 4x and the scaling with cores are looked at once, and not at all.
        if i == 0 or not p["quick"]:
            runs["ours_4x"].append(measure("ours", corpora[4], tokenizer, params_file, cores))
        if not p["quick"]:
            runs["ours_1_process"].append(measure("ours", corpora[1], tokenizer, params_file, 1))
    peak = lambda name: max(r["peak_bytes"] for r in runs[name])  # noqa: E731
    speed = lambda name: sorted(r["chars_per_second"] for r in runs[name])[len(runs[name]) // 2]  # noqa: E731
    fixtures.report(
        [r["chars_per_second"] for r in runs["ours"]],
        [r["chars_per_second"] for r in runs["peer"]],
        processes=cores,
        peak_mib_1x=round(peak("ours") / 2**20),
        peak_mib_4x=round(peak("ours_4x") / 2**20),
        peak_ratio_4x_to_1x=round(peak("ours_4x") / peak("ours"), 3),
        peer_peak_mib_1x=round(peak("peer") / 2**20),
        speedup_over_1_process=round(speed("ours") / speed("ours_1_process"), 2) if runs["ours_1_process"] else "not measured with --quick",
        blocks_1x=runs["ours"][0]["blocks"],
        blocks_4x=runs["ours_4x"][0]["blocks"],
    )


if __name__ == "__main__":
    if sys.argv[1] == "--one":
        kind, corpus_dir, tokenizer_dir, params_file, processes = sys.argv[2:]
        one(kind, corpus_dir, tokenizer_dir, params_file, int(processes))
    else:
        main()
