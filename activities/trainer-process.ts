// The one place that starts a trainer process (python -m lawgpt_trainer <stage> --request <file>).
// It enforces the contract from the orchestrator's side: every stdout line must be a TrainerEvent,
// the stderr tail is kept for error messages, and the whole process group dies on cancellation.
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { createInterface } from 'node:readline';
import { TrainerEvent } from '../common/contract.js';
import type { StageName } from '../common/stages.js';

const STDERR_TAIL_CHARS = 4000;

export interface TrainerLaunch {
  python: string;
  stage: StageName;
  requestPath: string;
  cwd: string;
  onEvent: (event: TrainerEvent) => void;
  onStderr?: (line: string) => void;
  /** Aborting sends SIGTERM to the trainer's process group (it saves a checkpoint and exits)... */
  signal?: AbortSignal;
  /** ...and SIGKILL to whatever is left this long after. */
  stopGraceMs?: number;
  env?: NodeJS.ProcessEnv;
}

export interface TrainerExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  events: TrainerEvent[];
  stderrTail: string;
  /** stdout lines that were not contract events: a trainer bug, reported rather than ignored. */
  protocolErrors: string[];
}

// The trainer needs no credentials: it reads and writes local files only. Only variables that
// shape the Python, CUDA and threading runtime are passed down, and never one that looks like a
// secret, so nothing secret can reach its logs.
const PASSED_ENV = /^(PATH|HOME|USER|LANG|LC_\w+|TZ|TMPDIR|LD_LIBRARY_PATH|PYTHON\w*|CUDA\w*|NVIDIA\w*|NCCL\w*|HF_\w+|TRANSFORMERS_\w+|TORCH\w*|OMP_\w+|MKL_\w+|TOKENIZERS_PARALLELISM|DS_\w+)$/;
const SECRET_ENV = /SECRET|TOKEN|PASSWORD|CREDENTIAL|(^|_)KEY($|_)/i;

export function trainerEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const passed = Object.entries(env).filter(([name]) => PASSED_ENV.test(name) && !SECRET_ENV.test(name));
  return { ...Object.fromEntries(passed), PYTHONUNBUFFERED: '1', HF_HUB_OFFLINE: '1', TRANSFORMERS_OFFLINE: '1' };
}

/** The version and source hash of the trainer package `python` would run (see fingerprint()). */
export async function trainerVersion(python: string): Promise<string> {
  const { stdout } = await promisify(execFile)(python, ['-c', 'import lawgpt_trainer; print(lawgpt_trainer.fingerprint())'], { env: trainerEnv() });
  return stdout.trim();
}

export function launchTrainer(launch: TrainerLaunch): Promise<TrainerExit> {
  const child = spawn(launch.python, ['-m', 'lawgpt_trainer', launch.stage, '--request', launch.requestPath], {
    cwd: launch.cwd,
    env: launch.env ?? trainerEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
    // Own process group, so cancellation also reaches DeepSpeed's or DataLoader's children.
    detached: true,
  });
  const events: TrainerEvent[] = [];
  const protocolErrors: string[] = [];
  let stderrTail = '';

  createInterface({ input: child.stdout! }).on('line', (line) => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      protocolErrors.push(line);
      return;
    }
    const event = TrainerEvent.safeParse(parsed);
    if (!event.success) {
      protocolErrors.push(line);
      return;
    }
    events.push(event.data);
    launch.onEvent(event.data);
  });
  createInterface({ input: child.stderr! }).on('line', (line) => {
    stderrTail = (stderrTail + line + '\n').slice(-STDERR_TAIL_CHARS);
    launch.onStderr?.(line);
  });

  const killGroup = (sig: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, sig);
    } catch {
      // already gone
    }
  };
  let forceKill: NodeJS.Timeout | undefined;
  const onAbort = () => {
    killGroup('SIGTERM');
    forceKill = setTimeout(() => killGroup('SIGKILL'), launch.stopGraceMs ?? 10_000);
  };
  launch.signal?.addEventListener('abort', onAbort, { once: true });
  // A cancel that arrived while inputs were downloading still stops this trainer at once.
  if (launch.signal?.aborted) onAbort();

  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(forceKill);
      // The trainer is gone; nothing of its group may outlive it (a DataLoader or launcher child).
      killGroup('SIGKILL');
      launch.signal?.removeEventListener('abort', onAbort);
      resolve({ code, signal, events, stderrTail, protocolErrors });
    });
  });
}
