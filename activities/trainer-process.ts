// The one place that starts a trainer process (python -m lawgpt_trainer <stage> --request <file> ...),
// directly or as DeepSpeed's ranks. It enforces the contract from the orchestrator's side: every
// stdout line must be a TrainerEvent (DeepSpeed's own log lines excepted), the stderr tail is kept
// for error messages, and the whole process group dies on cancellation.
import { execFile, spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { createInterface } from 'node:readline';
import type { DeepSpeedConfig } from '../common/config.js';
import { SECRET_NAME } from '../common/settings.js';
import { TrainerEvent, trainerArgs } from '../common/contract.js';
import type { StageName } from '../common/stages.js';
import { join } from 'node:path';
import { killRanksArgs, trainerStart } from './deepspeed-launch.js';

const STDERR_TAIL_CHARS = 4000;
// How long killing a stage's ranks on every host may take (pdsh's ssh connections time out in 10 s).
const KILL_ON_HOSTS_MS = 30_000;

export interface TrainerLaunch {
  python: string;
  stage: StageName;
  requestPath: string;
  /**
   * The request is not written yet: the trainer imports its code, then waits for requestPath to
   * appear (renamed into place whole), so that its start overlaps the input downloads.
   */
  waitForRequest?: boolean;
  cwd: string;
  onEvent: (event: TrainerEvent) => void;
  onStderr?: (line: string) => void;
  /** Start the ranks DeepSpeed's hosts ask for (trainerStart), instead of one plain process. */
  deepspeed?: DeepSpeedConfig;
  /** The request's stop_file: created on abort, so that every rank stops at the same step... */
  stopFile?: string;
  /** ...aborting also sends SIGTERM to a plain trainer's process group (it saves and exits)... */
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
// shape the Python, CUDA and threading runtime (and the ssh agent and pdsh settings the DeepSpeed
// launcher reaches other nodes with) are passed down, and never one that looks like a secret, so
// nothing secret can reach its logs.
const PASSED_ENV = /^(PATH|HOME|USER|LANG|LC_\w+|TZ|TMPDIR|LD_LIBRARY_PATH|PYTHON\w*|CUDA\w*|NVIDIA\w*|NCCL\w*|HF_\w+|TRANSFORMERS_\w+|TORCH\w*|OMP_\w+|MKL_\w+|TOKENIZERS_PARALLELISM|DS_\w+|SSH_AUTH_SOCK|PDSH_\w+)$/;

export function trainerEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const passed = Object.entries(env).filter(([name]) => PASSED_ENV.test(name) && !SECRET_NAME.test(name));
  return { ...Object.fromEntries(passed), PYTHONUNBUFFERED: '1', HF_HUB_OFFLINE: '1', TRANSFORMERS_OFFLINE: '1' };
}

/** The version and source hash of the trainer package `python` would run (see fingerprint()). */
export async function trainerVersion(python: string): Promise<string> {
  const { stdout } = await promisify(execFile)(python, ['-c', 'import lawgpt_trainer; print(lawgpt_trainer.fingerprint())'], { env: trainerEnv() });
  return stdout.trim();
}

/** Kills the stage's ranks on every host (killRanksArgs); resolves once pdsh is done, or has had its time. */
function killOnHosts(deepspeed: DeepSpeedConfig, requestPath: string, env: NodeJS.ProcessEnv): Promise<void> {
  return new Promise((resolve) => {
    const pdsh = spawn('pdsh', killRanksArgs(deepspeed, requestPath), { env, stdio: 'ignore', timeout: KILL_ON_HOSTS_MS });
    pdsh.on('error', () => resolve());
    pdsh.on('close', () => resolve());
  });
}

export function launchTrainer(launch: TrainerLaunch): Promise<TrainerExit> {
  const ds = launch.deepspeed;
  const trainer = trainerArgs(launch.stage, launch.requestPath, launch.waitForRequest);
  const baseEnv = launch.env ?? trainerEnv();
  const start = trainerStart(ds, trainer, baseEnv);
  for (const [name, text] of Object.entries(start.files)) writeFileSync(join(launch.cwd, name), text);
  const env = { ...baseEnv, ...start.env };
  const child = spawn(launch.python, start.args, {
    cwd: launch.cwd,
    // Ranks may be a DeepSpeed launcher's children rather than ours: they watch this process and
    // die with it.
    env: { ...env, LAWGPT_SUPERVISOR_PID: String(process.pid) },
    stdio: ['ignore', 'pipe', 'pipe'],
    // Own process group, so cancellation also reaches DeepSpeed's or DataLoader's children.
    detached: true,
  });
  const events: TrainerEvent[] = [];
  const protocolErrors: string[] = [];
  let stderrTail = '';

  const keepStderr = (line: string) => {
    stderrTail = (stderrTail + line + '\n').slice(-STDERR_TAIL_CHARS);
    launch.onStderr?.(line);
  };
  createInterface({ input: child.stdout! }).on('line', (line) => {
    // DeepSpeed logs to stdout, in its launchers and ranks alike; rank 0's events are the only
    // lines there that are JSON.
    if (ds && !line.startsWith('{')) {
      keepStderr(line);
      return;
    }
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
  createInterface({ input: child.stderr! }).on('line', keepStderr);

  const killGroup = (sig: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, sig);
    } catch {
      // already gone
    }
  };
  let forceKill: NodeJS.Timeout | undefined;
  let backstopping: Promise<void> | undefined;
  const backstop = async () => {
    // Across hosts every rank is a child of its host's sshd, out of this group's reach.
    if (ds && ds.hosts.length > 1) await killOnHosts(ds, launch.requestPath, env);
    killGroup('SIGKILL');
  };
  const onAbort = () => {
    // Still waiting for its request, the trainer has done nothing it could save.
    if (launch.waitForRequest && !existsSync(launch.requestPath)) {
      killGroup('SIGKILL');
      return;
    }
    if (launch.stopFile) writeFileSync(launch.stopFile, 'stop requested by the orchestrator\n');
    // DeepSpeed's launchers answer SIGTERM by killing their ranks 30 s later, maybe mid-save:
    // under DeepSpeed the stop file alone asks, however the ranks were started, and SIGKILL after
    // the grace period is the backstop.
    if (!ds) killGroup('SIGTERM');
    forceKill = setTimeout(() => (backstopping = backstop()), launch.stopGraceMs ?? 10_000);
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
      // A kill on the other hosts still under way must not outlive this attempt: its pattern
      // would match the next attempt's ranks, which take the same request path.
      void (backstopping ?? Promise.resolve()).then(() => resolve({ code, signal, events, stderrTail, protocolErrors }));
    });
  });
}
