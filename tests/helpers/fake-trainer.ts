// A stand-in trainer package for launcher and activity tests: same CLI, same events, but each
// stage misbehaves in one known way. Put its folder first on PYTHONPATH to use it.
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const MAIN = String.raw`
import hashlib, json, os, signal, subprocess, sys, time

stage, request_path = sys.argv[1], sys.argv[3]
while "--wait-for-request" in sys.argv and not os.path.exists(request_path):
    time.sleep(0.05)
request = json.load(open(request_path))
def emit(**event):
    print(json.dumps(event), flush=True)

def hand_over_checkpoint(step):
    # A (tiny, valid) checkpoint, as the real trainer commits one.
    folder = os.path.join(request["output_dir"], "checkpoints", "checkpoint-%d" % step)
    os.makedirs(folder)
    with open(os.path.join(folder, "state.bin"), "w") as f:
        f.write("x")
    manifest = {"manifest_version": 1, "run_id": request["run_id"], "stage": stage, "step": step, "world_size": 1, "config_hash": "0" * 64, "vocab_size": 1,
                "trainer_version": "fake", "files": [{"path": "state.bin", "size": 1, "sha256": hashlib.sha256(b"x").hexdigest()}]}
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    emit(event="checkpoint", step=step, path="checkpoints/checkpoint-%d" % step, save_seconds=0.1)

emit(event="started", stage=stage, trainer_version="fake", pid=os.getpid())
if stage == "vocab":
    # Succeeds: writes its output, reports progress, and shows which inputs and environment it got.
    print("env: " + " ".join(sorted(os.environ)), file=sys.stderr)
    os.makedirs(os.path.join(request["output_dir"], "tokenizer"), exist_ok=True)
    with open(os.path.join(request["output_dir"], "tokenizer", "pieces.txt"), "w") as f:
        f.write("tokenizer from " + ",".join(sorted(request["inputs"])))
    for step in (1, 2):
        emit(event="progress", step=step, total_steps=2, loss=3.0 / step)
    emit(event="completed", outputs={"tokenizer": "tokenizer"}, metrics={"pieces": 42})
elif stage == "base" and request.get("resume_from"):
    # Resumed: loads the checkpoint, reports a step, and says whether the checkpoint's local copy
    # was deleted once that step was reported.
    loaded = open(os.path.join(request["resume_from"], "state.bin")).read()
    emit(event="progress", step=2, total_steps=2, loss=1.0)
    deadline = time.time() + 20
    while os.path.exists(request["resume_from"]) and time.time() < deadline:
        time.sleep(0.05)
    for name in ("tokenizer", "model"):
        os.makedirs(os.path.join(request["output_dir"], name))
        with open(os.path.join(request["output_dir"], name, "resumed.json"), "w") as f:
            json.dump({"loaded": loaded, "copy_left_after_the_step": os.path.exists(request["resume_from"])}, f)
    emit(event="completed", outputs={"tokenizer": "tokenizer", "model": "model"}, metrics={})
elif stage == "base":
    if request.get("run_id", "").startswith("checkpoint-then-crash"):
        # Commits a checkpoint first, so the crash follows real progress.
        hand_over_checkpoint(1)
        time.sleep(2)
    # Crashes the way real code does.
    print("loading corpus", file=sys.stderr)
    print("Traceback (most recent call last):\nMemoryError: out of memory in sentencepiece", file=sys.stderr)
    sys.exit(3)
elif stage == "pretrain" and request["run_id"].startswith("compiles"):
    # Compiles: says which compile-cache files it was given, and offers its own, twice.
    cache = request["inputs"].get("compile_cache")
    given = {name: open(os.path.join(cache, name)).read() for name in sorted(os.listdir(cache))} if cache else {}
    out = request["output_dir"]
    os.makedirs(os.path.join(out, "compile_cache"))
    for part in ("training", "evaluation"):
        name = "torch-fake-cpu." + request["run_id"] + "-" + part + ".bin"
        with open(os.path.join(out, "compile_cache", name), "w") as f:
            f.write(part + " graphs of " + request["run_id"])
        emit(event="compile_cache", path="compile_cache/" + name)
    os.makedirs(os.path.join(out, "model"))
    with open(os.path.join(out, "model", "given.json"), "w") as f:
        json.dump(given, f)
    emit(event="completed", outputs={"model": "model"}, metrics={})
elif stage == "pretrain" and request["run_id"].startswith("reads-blocks"):
    # Says which inputs it was given, and what is in its folders.
    os.makedirs(os.path.join(request["output_dir"], "model"))
    with open(os.path.join(request["output_dir"], "model", "given.json"), "w") as f:
        json.dump({name: sorted(os.listdir(path)) for name, path in sorted(request["inputs"].items())}, f)
    emit(event="completed", outputs={"model": "model"}, metrics={})
elif stage == "pretrain" and request["run_id"].startswith("hangs"):
    # Reports a step, then hangs for good, deaf to SIGTERM and the stop file alike.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    emit(event="progress", step=1, total_steps=100, loss=2.0)
    time.sleep(600)
elif stage == "pretrain" and request["run_id"].startswith("goes-quiet"):
    # Reports a step, then nothing, but still saves a checkpoint and stops when asked to.
    def stop(*_):
        hand_over_checkpoint(3)
        sys.exit(143)
    signal.signal(signal.SIGTERM, stop)
    emit(event="progress", step=1, total_steps=100, loss=2.0)
    time.sleep(600)
elif stage == "pretrain":
    # Refuses its input, naming the local file as the real trainer does.
    message = os.path.join(request["inputs"]["corpus"], "law.md") + ":1: a line of 50,000,000 characters, over data.max_line_chars (%s)" % f"{request['max_line_chars']:,}"
    print("invalid input: " + message, file=sys.stderr)
    emit(event="failed", kind="invalid_input", message=message)
    # Under DeepSpeed, the launcher may exit with another rank's code.
    sys.exit(1 if request["run_id"].startswith("another-rank") else 2)
elif stage == "sft":
    # Breaks the protocol on stdout.
    print("hello from a stray print", flush=True)
    emit(event="completed", outputs={}, metrics={})
elif stage == "eval":
    # Hangs, with a child of its own, until killed.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(os.path.join(os.path.dirname(request_path), "grandchild.pid"), "w") as f:
        f.write(str(child.pid))
    emit(event="progress", step=1, total_steps=100)
    time.sleep(600)
`;

const REAL_PACKAGE = new URL('../../trainer-py/lawgpt_trainer', import.meta.url).pathname;

export async function createFakeTrainer(): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'lawgpt-fake-trainer-'));
  await mkdir(join(root, 'lawgpt_trainer'));
  // Modules the stand-in does not replace (lawgpt_trainer.runner, DeepSpeed's runner across hosts) come from the real package.
  await writeFile(join(root, 'lawgpt_trainer', '__init__.py'), `__path__.append(${JSON.stringify(REAL_PACKAGE)})\n`);
  await writeFile(join(root, 'lawgpt_trainer', '__main__.py'), MAIN);
  return root;
}
