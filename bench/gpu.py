"""`npm run bench:gpu`: training speed and memory of the trainer on one GPU, launched exactly as the
activity launches it (one DeepSpeed rank, `python -m lawgpt_trainer <stage> --request …` with the
rank environment DeepSpeed's launcher would give it), on LLaMA-shaped models initialised here, for
each row of the plan that bench/gpu-plan.ts wrote from the shipped recipes.

Per row: tokens/s and MFU (6N per token over the card's dense fp16 peak), the share of training time
spent waiting for batches, peak GPU memory (what tensors took and what the allocator reserved)
beside the trainer's estimate of it (memory.py) and the layers compiled and recomputed, host RSS
before the model loads and at its peak (the trainer's own metrics) and sampled here by phase
(startup, steps, checkpoint saves, after the last step), seconds from launch to the
first step and what they went on (any launcher, then the trainer's startup phases; and once per
run, a rank's imports by package), the seconds a checkpoint's save cost (the trainer's own count,
the longest of the row's), for the resumed row the largest loss difference against the run it
resumes, and where the time of the step the plan profiles went (the trainer's torch profiler
summary). The first row of a shape tokenizes the corpus; later rows take its blocks, as the block
cache would. Every row starts with an empty inductor cache, as on a fresh worker, and is given
the compile-cache parts that earlier rows of the same stage config offered, as the orchestrator's
compile cache would. Results: bench/results/gpu-<date>-<card>.{json,md}, rewritten after every
row so that a run cut short keeps what it measured.

    python bench/gpu.py --prepare --carry DIR   (here: tokenizers and data slices into DIR)
    python bench/gpu.py --carry DIR [--out DIR] [--only NAME[,NAME...]] [--seconds N]"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROW_LIMIT_SECONDS = 240
MIN_ROW_SECONDS = 45  # less than this is not enough to load a model and train a few steps
# Dense fp16 tensor peaks in TFLOP/s, first match on the device name wins.
PEAK_FP16_TFLOPS = [("H100 PCIe", 756), ("H100", 989), ("H200", 989), ("A100", 312), ("V100", 125), ("L40S", 362), ("L4", 121), ("A10", 125)]
CORPUS_BYTES = {"smoke": 1 << 20, "full": 8 << 20}
# BenTsao's headline: 10 epochs of 8,658 instructions in 2 h 17 min on one A100-SXM-80GB.
BENTSAO_SAMPLES_PER_SECOND, A100_PEAK_TFLOPS = 10 * 8658 / (2 * 3600 + 17 * 60), 312
INSTRUCTIONS = ("instructions/bentsao_llama_data.jsonl", 3000)
PROFILE_ROWS = 12
RSS_SAMPLE_SECONDS = 0.05
IMPORT_ROWS = 10


def prepare(carry: Path) -> None:
    """The merged tokenizer (the trainer's own base and vocab stages), a corpus slice and an
    instruction slice: everything the rows read that ../shared would otherwise provide."""
    sys.path.insert(0, str(ROOT / "bench"))
    import fixtures

    plan = json.loads((carry / "plan.json").read_text("utf-8"))
    shared = Path(os.environ["LAWGPT_SHARED_DATA"])
    work = carry / "work"
    p = {"config": plan["run"], "work": str(work), "quick": False, "shared_data": str(shared)}
    for name in ("corpus", "base-tokenizer", "tokenizer"):
        shutil.rmtree(carry / name, ignore_errors=True)
    budget = CORPUS_BYTES["smoke" if plan["smoke"] else "full"]
    for source in sorted((shared / "corpus").rglob("*")):
        if source.suffix not in (".md", ".txt") or budget <= 0:
            continue
        target = carry / "corpus" / source.relative_to(shared / "corpus")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        budget -= source.stat().st_size
    base, _ = fixtures.run_stage(p, "base", {}, work / "base")
    shutil.copytree(base / "tokenizer", carry / "base-tokenizer")
    merged, metrics = fixtures.run_stage(p, "vocab", {"corpus": carry / "corpus", "base_tokenizer": carry / "base-tokenizer"}, work / "vocab")
    shutil.copytree(merged / "tokenizer", carry / "tokenizer")
    path, count = INSTRUCTIONS
    lines = (shared / path).read_text("utf-8").splitlines()[:count]
    (carry / "instructions.jsonl").write_text("\n".join(lines) + "\n", "utf-8")
    shutil.rmtree(work)
    print(f"prepared {carry}: merged vocabulary of {metrics['merged_vocab_size']} pieces", file=sys.stderr)


def device() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"name": "cpu", "peak_tflops": None, "torch": torch.__version__}
    name = torch.cuda.get_device_name(0)
    peak = next((tflops for key, tflops in PEAK_FP16_TFLOPS if key in name), None)
    return {"name": name, "peak_tflops": peak, "torch": torch.__version__, "cuda": torch.version.cuda, "capability": ".".join(map(str, torch.cuda.get_device_capability(0)))}


def import_profile() -> dict:
    """Where a pretrain rank's imports go on this machine, in a fresh process under `python -X
    importtime`: the stage's code (the startup table's imports phase) and DeepSpeed (imported in its
    model phase), without what a rank leaves out, the seconds summed by top-level package, whoever
    imported it."""
    imports = "import lawgpt_trainer.cli; lawgpt_trainer.cli.leave_out_unused_libraries(); import lawgpt_trainer.stages.pretrain, deepspeed"
    ran = subprocess.run([sys.executable, "-X", "importtime", "-c", imports], capture_output=True, text=True)
    by_package = Counter()
    for line in ran.stderr.splitlines():
        own = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if own:
            by_package[own[2].split(".")[0]] += int(own[1]) / 1e6
    return {"seconds": sum(by_package.values()), "packages": [{"name": name, "seconds": seconds} for name, seconds in by_package.most_common(IMPORT_ROWS)]}


def make_model(carry: Path, base_config: dict, shape: dict, folder: Path) -> Path:
    """A randomly initialised LLaMA of `shape` for the base tokenizer, saved in fp16 on a GPU (as
    published LLaMA weights are) and in fp32 on the CPU (which the cpu profile trains in)."""
    import torch
    from transformers import AutoTokenizer

    from lawgpt_trainer import tokenizer as tok
    from lawgpt_trainer.stages.base import new_model

    if (folder / "config.json").is_file():
        return folder
    tokenizer = AutoTokenizer.from_pretrained(carry / "base-tokenizer")
    on_gpu = torch.cuda.is_available()
    with torch.device("cuda" if on_gpu else "cpu"):
        model = new_model({**base_config, **shape, "max_position_embeddings": 4096}, tokenizer)
    (model.half() if on_gpu else model).save_pretrained(folder)
    tok.save_with_model(tokenizer, carry / "base-tokenizer", folder)
    del model
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(row: dict, request: dict, folder: Path, limit_seconds: float) -> dict:
    """Runs the row's trainer as the activity would, on a fresh worker; its events with the second each arrived."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "request.json").write_text(json.dumps(request), "utf-8")
    deepspeed = request["config"].get("deepspeed")
    env = {**os.environ, **row.get("launcher_env", {}), "TORCHINDUCTOR_CACHE_DIR": str(folder / "inductor")}
    if deepspeed:
        for name, text in row["launcher_files"].items():
            (folder / name).write_text(text)
        # A port of its own, whether a launcher or the rank itself is told it: a killed row's may linger.
        port = str(free_port())
        args = [f"--master_port={port}" if a.startswith("--master_port=") else a.replace("{request}", str(folder / "request.json")) for a in row["launcher"]]
        if "MASTER_PORT" in env:
            env["MASTER_PORT"] = port
        command = [sys.executable, *args]
    else:
        command = [sys.executable, "-m", "lawgpt_trainer", row["stage"], "--request", str(folder / "request.json")]
    started = time.monotonic()
    events = []
    with open(folder / "stderr.log", "w") as stderr:
        # In the row's folder, as the activity starts a stage in its own: a launcher reads its files there.
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=folder, start_new_session=True)
        # A row that overruns is killed, launcher and ranks alike, so that the rest still run.
        overran = threading.Event()

        def kill() -> None:
            overran.set()
            os.killpg(child.pid, signal.SIGKILL)

        limit = threading.Timer(limit_seconds, kill)
        limit.start()
        rss = []
        # The rank's resident memory over time, to say which phase its peak is in; only where the
        # command is the rank itself (one slot, no launcher in between).
        if command[1:3] == ["-m", "lawgpt_trainer"]:
            threading.Thread(target=sample_rss, args=(child, started, rss), daemon=True).start()
        for line in child.stdout:
            if line.startswith("{"):
                events.append({**json.loads(line), "at": time.monotonic() - started})
        code = child.wait()
        limit.cancel()
    stderr = (folder / "stderr.log").read_text(errors="replace")[-2000:]
    return {"code": code, "events": events, "rss": rss, "seconds": time.monotonic() - started, "stderr": stderr, "killed_at": limit_seconds if overran.is_set() else None}


def sample_rss(child: subprocess.Popen, started: float, samples: list) -> None:
    """(second, resident bytes, anonymous bytes): what is not anonymous is mostly the libraries'
    files (torch's and CUDA's), which a node's ranks share in the page cache."""
    while child.poll() is None:
        try:
            with open(f"/proc/{child.pid}/status") as f:
                kib = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f) if k in ("VmRSS", "RssAnon")}
        except (OSError, ValueError):
            return
        if "VmRSS" not in kib:  # exited, not yet reaped: it holds no memory any more
            return
        samples.append((time.monotonic() - started, kib["VmRSS"] * 1024, kib["RssAnon"] * 1024))
        time.sleep(RSS_SAMPLE_SECONDS)


def rss_by_phase(events: list[dict], samples: list[tuple[float, int, int]]) -> dict:
    """The most host memory the rank held in each phase, in GiB, resident and anonymous: before its
    first step ends (imports, data, model, engine, compiling), during the steps, while it saved a
    checkpoint (the seconds before each checkpoint event that the trainer says the save took), and
    after the last step (the final save, the LoRA fold, the exit)."""
    steps = [e["at"] for e in events if e["event"] == "progress"]
    saves = [(e["at"] - e["save_seconds"], e["at"]) for e in events if e["event"] == "checkpoint"]
    if not steps or not samples:
        return {}
    last = max(steps[-1], *(end for _, end in saves)) if saves else steps[-1]

    def phase(at: float) -> str:
        if at <= steps[0]:
            return "startup"
        if any(begin <= at <= end for begin, end in saves):
            return "checkpoint saves"
        return "steps" if at <= last else "after the last step"

    peaks: dict[str, list[float]] = {}
    for at, resident, anonymous in samples:
        peak = peaks.setdefault(phase(at), [0.0, 0.0])
        peak[:] = max(peak[0], resident / 2**30), max(peak[1], anonymous / 2**30)
    return peaks


def parameters_with_layers(shape: dict, parameters: int, layers: int) -> int:
    """The model's parameters had it `layers` decoder layers instead of the shape's."""
    h, ffn, heads, kv = shape["hidden_size"], shape["intermediate_size"], shape["num_attention_heads"], shape["num_key_value_heads"]
    per_layer = 2 * h * h + 2 * h * (h * kv // heads) + 3 * h * ffn + 2 * h
    return parameters + (layers - shape["num_hidden_layers"]) * per_layer


def measure(row: dict, shape: dict, ran: dict, peak_tflops: float | None, resumed_from: dict | None) -> dict:
    from lawgpt_trainer import profiling

    events = ran["events"]
    completed = next((e for e in events if e["event"] == "completed"), None)
    if ran["code"] != 0 or not completed:
        failed = next((e for e in events if e["event"] == "failed"), {})
        if ran["killed_at"]:
            last = max((e["step"] for e in events if e["event"] == "progress"), default=0)
            return {"row": row["name"], "error": f"killed at the {ran['killed_at']:.0f} s left to it, after step {last}"}
        return {"row": row["name"], "error": failed.get("message") or f"exit {ran['code']}: {ran['stderr'][-600:]}"}
    config, metrics = row["config"], completed["metrics"]
    steps = [e for e in events if e["event"] == "progress" and e["step"] >= 1]
    saved = {e["step"]: e["save_seconds"] for e in events if e["event"] == "checkpoint"}
    # A step's time is the gap to the step before it; a save happens between a step's progress
    # event and the next step, so those gaps are not the step's alone.
    gaps = {b["step"]: b["at"] - a["at"] for a, b in zip(steps, steps[1:]) if b["step"] == a["step"] + 1}
    window = config.get("profiler")
    profiled = set(range(window["start_step"], window["start_step"] + window["steps"])) if window else set()
    plain = [gap for step, gap in gaps.items() if step - 1 not in saved and step > 1 and step not in profiled]
    step_seconds = statistics.median(plain) if plain else None
    samples_per_step = config.get("global_batch_size") or config["micro_batch_size"] * config["gradient_accumulation_steps"] * metrics.get("processes", 1)
    result = {
        "row": row["name"],
        "stage": row["stage"],
        # As trained: the trainer resolves "auto".
        "zero_stage": metrics.get("zero_stage"),
        "parameters": metrics.get("model_parameters"),
        "seconds_per_step": step_seconds,
        "samples_per_second": samples_per_step / step_seconds if step_seconds else None,
        # The share of the training loop the device idled waiting for batches (training.py).
        "data_wait_share": metrics["data_wait_seconds"] / metrics["train_seconds"],
        "gpu_peak_gib": metrics["gpu_peak_bytes"] / 2**30 if "gpu_peak_bytes" in metrics else None,
        "gpu_reserved_peak_gib": metrics["gpu_reserved_peak_bytes"] / 2**30 if "gpu_reserved_peak_bytes" in metrics else None,
        # memory.py's estimate, made before the model loaded: the first GPU runs calibrate it.
        "estimated_gib": metrics["memory_estimate_bytes"] / 2**30 if "memory_estimate_bytes" in metrics else None,
        "checkpointed_layers": metrics.get("checkpointed_layers"),
        "compiled_layers": metrics.get("compiled_layers"),
        # Graphs the compile cache held, and graphs compiled afresh.
        "compile_cache_hits": metrics.get("compile_cache_hits"),
        "compile_cache_misses": metrics.get("compile_cache_misses"),
        "host_peak_rss_gib": metrics["host_peak_rss_bytes"] / 2**30,
        # The floor the model's host memory comes on top of: the process, its libraries, CUDA's context.
        "host_rss_before_model_gib": metrics["host_rss_before_model_bytes"] / 2**30,
        "model_load_host_gib": metrics["model_load_host_bytes"] / 2**30,
        "host_rss_by_phase_gib": rss_by_phase(events, ran["rss"]),
        "seconds_to_first_step": steps[0]["at"] if steps else None,
        "checkpoint_save_seconds": max(saved.values(), default=None),
        "blocks_from_cache": metrics.get("blocks_from_cache"),
        # Updates fp16 loss scaling skipped: where stages differ here, their losses part ways.
        "overflow_skipped_steps": metrics.get("overflow_skipped_steps"),
    }
    if steps and "seconds_to_first_step" in metrics:
        # The first progress event comes as the trainer's first step ends: what came before the
        # trainer process started is the work of whatever launched it (a DeepSpeed launcher, or
        # for one rank only the spawn). The trainer's phases follow, in the order it reports them.
        phases = {k.removeprefix("startup_").removesuffix("_seconds"): v for k, v in metrics.items() if k.startswith("startup_") and k.endswith("_seconds")}
        result["startup_seconds"] = {"launcher": steps[0]["at"] - metrics["seconds_to_first_step"], **phases}
    operations = ran["folder"] / "out" / profiling.PROFILER_DIR / profiling.OPERATIONS_FILE
    if operations.is_file():
        profile = json.loads(operations.read_text("utf-8"))
        result["profile"] = {**profile, "operations": profile["operations"][:PROFILE_ROWS]}
    if row["stage"] == "pretrain" and step_seconds:
        result["tokens_per_second"] = samples_per_step * config["block_size"] / step_seconds
        if peak_tflops and result["parameters"]:
            result["mfu"] = 6 * result["parameters"] * result["tokens_per_second"] / (peak_tflops * 1e12)
    if row.get("scale_to_layers") and step_seconds and result["parameters"]:
        # Compute per sample grows with the parameters (6N), so fewer layers scale up by their ratio.
        whole = parameters_with_layers(shape, result["parameters"], row["scale_to_layers"])
        result[f"samples_per_second_at_{row['scale_to_layers']}_layers"] = result["samples_per_second"] * result["parameters"] / whole
    if resumed_from:
        before = {e["step"]: e["loss"] for e in resumed_from["events"] if e["event"] == "progress" and "loss" in e}
        after = {e["step"]: e["loss"] for e in events if e["event"] == "progress" and "loss" in e and e["step"] > row["resumes"]["step"]}
        result["resume_loss_difference"] = max((abs(loss - before[s]) for s, loss in after.items() if s in before), default=None)
    return result


def table(card: dict, results: list[dict]) -> str:
    fmt = lambda x, spec: "–" if x is None else format(x, spec)  # noqa: E731
    lines = [
        f"Card: {card['name']} (dense fp16 peak {card['peak_tflops']} TFLOP/s), torch {card['torch']}.",
        "",
        "| Row | ZeRO | tokens/s | samples/s | MFU | data wait | peak GPU GiB | reserved GiB | estimated GiB | layers compiled / checkpointed | host RSS GiB: before model / peak | s to first step | checkpoint save s | loss diff after resume | row s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['row']} | not run: {r['skipped']} | | | | | | | | | | | | | |")
            continue
        if "error" in r:
            lines.append(f"| {r['row']} | failed: {' '.join(r['error'].split())[:120].replace('|', '/')} | | | | | | | | | | | | | |")
            continue
        lines.append(
            f"| {r['row']} | {fmt(r['zero_stage'], 'd')} | {fmt(r.get('tokens_per_second'), ',.0f')} | {fmt(r['samples_per_second'], '.2f')} | {fmt(r.get('mfu'), '.1%')} | {fmt(r.get('data_wait_share'), '.1%')} | "
            f"{fmt(r['gpu_peak_gib'], '.1f')} | {fmt(r['gpu_reserved_peak_gib'], '.1f')} | {fmt(r['estimated_gib'], '.1f')} | {fmt(r['compiled_layers'], 'd')} / {fmt(r['checkpointed_layers'], 'd')} | "
            f"{fmt(r['host_rss_before_model_gib'], '.1f')} / {fmt(r['host_peak_rss_gib'], '.1f')} | {fmt(r['seconds_to_first_step'], '.0f')} | "
            f"{fmt(r['checkpoint_save_seconds'], '.1f')} | {fmt(r.get('resume_loss_difference'), '.1e')} | {r['row_seconds']:.0f} |"
        )
    imports = card.get("imports")
    if imports:
        packages = ", ".join(f"{p['name']} {p['seconds']:.1f}" for p in imports["packages"])
        lines += ["", f"A pretrain rank's imports on this machine (python -X importtime, a fresh process): {imports['seconds']:.1f} s; by package, s: {packages}."]
    started = [r for r in results if r.get("startup_seconds")]
    if started:
        phases = list(dict.fromkeys(p for r in started for p in r["startup_seconds"]))
        lines += ["", "Seconds from launch to the first step, by phase (lawgpt_trainer/startup.py), and the graphs the compile cache held against those compiled afresh:", ""]
        lines += ["| Row | " + " | ".join(phases) + " | total | graphs from cache / compiled |", "|---" * (len(phases) + 3) + "|"]
        for r in started:
            graphs = f"{fmt(r.get('compile_cache_hits'), 'd')} / {fmt(r.get('compile_cache_misses'), 'd')}"
            lines.append(f"| {r['row']} | " + " | ".join(fmt(r["startup_seconds"].get(p), ".1f") for p in phases) + f" | {fmt(r['seconds_to_first_step'], '.1f')} | {graphs} |")
    sampled = [r for r in results if r.get("host_rss_by_phase_gib")]
    if sampled:
        phases = ["startup", "steps", "checkpoint saves", "after the last step"]
        lines += ["", f"Host RSS of the rank by phase, GiB, resident (anonymous: less the files mapped, which ranks share), the most of samples every {RSS_SAMPLE_SECONDS} s; after the last step: the final save, any LoRA fold, the exit:", ""]
        lines += ["| Row | " + " | ".join(phases) + " |", "|---" * (len(phases) + 1) + "|"]
        both = lambda peak: "–" if peak is None else f"{peak[0]:.1f} ({peak[1]:.1f})"  # noqa: E731
        lines += [f"| {r['row']} | " + " | ".join(both(r["host_rss_by_phase_gib"].get(p)) for p in phases) + " |" for r in sampled]
    for r in results:
        if "profile" in r:
            p = r["profile"]
            lines += ["", f"{r['row']}, step {p['first_step']} under the torch profiler ({p['seconds']:.2f} s, the {p['device']} busy for {p['busy_seconds'] / p['seconds']:.0%} of it; share of its time in each operation itself):", ""]
            lines += [f"- {o['name']}: {o['share']:.1%} ({o['calls']} calls)" for o in p["operations"]]
    for r in results:
        scaled = next((v for k, v in r.items() if k.startswith("samples_per_second_at_")), None)
        if scaled is not None:
            like_a100 = BENTSAO_SAMPLES_PER_SECOND * card["peak_tflops"] / A100_PEAK_TFLOPS if card["peak_tflops"] else None
            lines += [
                "",
                f"{r['row']}: {scaled:.2f} samples/s scaled to 32 layers, against BenTsao's {BENTSAO_SAMPLES_PER_SECOND:.1f} on one "
                f"A100-SXM-80GB (dense fp16 peak {A100_PEAK_TFLOPS} TFLOP/s); at BenTsao's utilisation this card would give {fmt(like_a100, '.1f')}.",
            ]
    return "\n".join(lines) + "\n"


def run(carry: Path, out: Path, only: list[str] | None, seconds: float | None) -> int:
    from lawgpt_trainer import contract

    deadline = time.monotonic() + seconds if seconds else None
    plan = json.loads((carry / "plan.json").read_text("utf-8"))
    card = device()
    card["imports"] = import_profile()
    if not plan["smoke"] and card["name"] == "cpu":
        print("no GPU here: run `npm run bench:gpu -- --smoke` to check the script on the CPU", file=sys.stderr)
        return 2
    work = Path(os.environ.get("LAWGPT_GPU_WORK", "/tmp/lawgpt-gpu-bench"))
    shutil.rmtree(work, ignore_errors=True)
    stem = f"gpu-{date.today().isoformat()}-{re.sub(r'[^A-Za-z0-9]+', '-', card['name']).strip('-')}"
    out.mkdir(parents=True, exist_ok=True)
    runs, blocks, results = {}, {}, []
    # The compile cache's folder of parts for each stage config (activities/compile-cache.ts).
    compile_caches: dict[str, Path] = {}

    def row_limit() -> float:
        return min(ROW_LIMIT_SECONDS, deadline - time.monotonic()) if deadline else ROW_LIMIT_SECONDS

    for row in plan["rows"]:
        if only and not any(name in row["name"] for name in only):
            continue
        resumed_from = runs.get(row["resumes"]["row"]) if row.get("resumes") else None
        checkpoint = resumed_from and next((e["path"] for e in resumed_from["events"] if e["event"] == "checkpoint" and e["step"] == row["resumes"]["step"]), None)
        if row.get("resumes") and not checkpoint:
            results.append({"row": row["name"], "skipped": f"no checkpoint of {row['resumes']['row']} at step {row['resumes']['step']} to resume"})
            continue
        # Checked before the model is made and again after: making a 7B-width one takes a while.
        if row_limit() < MIN_ROW_SECONDS:
            results.append({"row": row["name"], "skipped": f"{seconds:.0f} s budget spent"})
            continue
        shape = row["shape"]
        model = make_model(carry, plan["run"]["base"], plan["shapes"][shape], work / "models" / shape)
        folder = work / "rows" / re.sub(r"[^A-Za-z0-9]+", "-", row["name"])
        if row["stage"] == "pretrain":
            inputs = {"corpus": carry / "corpus", "tokenizer": carry / "tokenizer", "base_model": model, **({"blocks": blocks[shape]} if shape in blocks else {})}
        else:
            inputs = {"model": model, "instructions": carry / "instructions.jsonl"}
        stage_config = json.dumps([row["stage"], row["config"]], sort_keys=True)
        compile_cache = compile_caches.setdefault(stage_config, work / "compile-cache" / str(len(compile_caches)))
        if compile_cache.is_dir():
            inputs["compile_cache"] = compile_cache
        request = {
            "contract_version": contract.schema()["contract_version"],
            "run_id": "bench-gpu",
            "stage": row["stage"],
            "output_dir": str(folder / "out"),
            "split": plan["run"]["data"]["split"],
            "cleaning": plan["run"]["data"]["cleaning"],
            "on_bad_record": plan["run"]["data"]["on_bad_record"],
            "max_line_chars": plan["run"]["data"]["max_line_chars"],
            "inputs": {k: str(v) for k, v in inputs.items()},
            "config": row["config"],
            **({"resume_from": str(resumed_from["folder"] / "out" / checkpoint)} if checkpoint else {}),
        }
        if row_limit() < MIN_ROW_SECONDS:
            results.append({"row": row["name"], "skipped": f"{seconds:.0f} s budget spent after making the model"})
            continue
        print(f"--- {row['name']}", file=sys.stderr, flush=True)
        ran = launch(row, request, folder, row_limit())
        ran["folder"] = folder
        runs[row["name"]] = ran
        offered = next((e["path"] for e in ran["events"] if e["event"] == "blocks"), None)
        if offered and shape not in blocks:
            blocks[shape] = folder / "out" / offered
        for part in (e["path"] for e in ran["events"] if e["event"] == "compile_cache"):
            compile_cache.mkdir(parents=True, exist_ok=True)
            shutil.copy(folder / "out" / part, compile_cache)
        results.append({**measure(row, plan["shapes"][shape], ran, card["peak_tflops"], resumed_from), "row_seconds": ran["seconds"]})
        free_what_no_later_row_reads(row, plan["rows"], folder / "out")
        shutil.rmtree(folder / "inductor", ignore_errors=True)
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        write(out, stem, card, results)
    write(out, stem, card, results)
    print(table(card, results))
    return 0 if results and all("error" not in r and "skipped" not in r for r in results) else 1


def free_what_no_later_row_reads(row: dict, rows: list[dict], out: Path) -> None:
    """A full-training row's two checkpoints of a 1.1B model take 33 GB; the GPU machine's disk
    holds 64 GiB, so each row's outputs go once measured, but for its blocks (later rows of its
    shape take them) and the checkpoints of a row that a later row resumes."""
    resumed = any(r.get("resumes", {}).get("row") == row["name"] for r in rows)
    for name in ("model", "adapter", "samples", *(() if resumed else ("checkpoints",))):
        shutil.rmtree(out / name, ignore_errors=True)


def write(out: Path, stem: str, card: dict, results: list[dict]) -> None:
    """Rewritten after every row, so a run cut short keeps what it measured."""
    (out / f"{stem}.json").write_text(json.dumps({"date": date.today().isoformat(), "card": card, "rows": results}, indent=2) + "\n")
    (out / f"{stem}.md").write_text(table(card, results))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--carry", type=Path, required=True)
    parser.add_argument("--prepare", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--only", type=lambda names: names.split(","), help="rows whose names contain one of these, comma-separated")
    # The device machine's command limit: rows that would start too late are listed as not run,
    # and the row in progress is killed at the deadline, so the results come back in time.
    parser.add_argument("--seconds", type=float)
    args = parser.parse_args()
    if args.prepare:
        prepare(args.carry)
        return 0
    return run(args.carry, args.out, args.only, args.seconds)


if __name__ == "__main__":
    sys.exit(main())
