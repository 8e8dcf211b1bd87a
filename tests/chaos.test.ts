// Tests that kill things, on the real pipeline: Temporal dev server, MinIO, the trainer and a tiny
// LLaMA. Each prints what it killed and what it found.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Client, Connection, WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import { CancelledFailure } from '@temporalio/common';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { NativeConnection, Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { downloadVerified } from '../activities/checkpoints.js';
import { getText, listKeys } from '../activities/s3.js';
import { createActivities } from '../activities/index.js';
import { STAGE_WORKER_OPTIONS } from '../activities/stage.js';
import { trainerVersion } from '../activities/trainer-process.js';
import { parseRunConfig, type RunConfig } from '../common/config.js';
import { uploadDemoData } from '../infra/demo-data.js';
import { lawgptPipeline } from '../workflows/pipeline.js';
import { pauseUpdate, resumeUpdate, statusQuery } from '../workflows/definitions.js';
import { startMinio, type TestMinio } from './helpers/minio.js';
import { startSshHosts } from './helpers/sshd.js';
import { keepHistory } from './helpers/histories.js';
import { findProcesses, holdersOf, waitFor } from './helpers/processes.js';
import { startRestartableTemporal, startTemporal, workflowsPath } from './helpers/temporal.js';
import { tools } from './helpers/tools.js';

const CHECKPOINT_STEPS = 5;

// Each test trains its own pretrain stage (a seed of its own keeps the stage cache out of the
// way); base and vocab are shared through the cache after the first test. With `deepspeed`, the
// stage runs as two processes under the DeepSpeed launcher (cpu profile).
function chaosConfig(name: string, seed: number, maxSteps = 60, deepspeed?: { master_port: number; master_addr?: string; hosts?: { host: string; slots: number }[] }, runtime: Partial<RunConfig['runtime']> = {}): RunConfig {
  return parseRunConfig({
    name,
    bucket: 'lawgpt-chaos',
    stages: ['base', 'vocab', 'pretrain'],
    data: { corpus: 's3://lawgpt-chaos/data/corpus/', dialogue: 's3://lawgpt-chaos/data/d.jsonl', exam: 's3://lawgpt-chaos/data/e.jsonl' },
    base: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 2, max_position_embeddings: 256 },
    vocab: { vocab_size: 3000, input_sentence_size: 20000 },
    pretrain: {
      max_steps: maxSteps,
      micro_batch_size: 2,
      block_size: 64,
      checkpoint_steps: CHECKPOINT_STEPS,
      seed,
      ...(deepspeed && { deepspeed: { profile: 'cpu', hosts: [{ host: 'localhost', slots: 2 }], ...deepspeed } }),
    },
    runtime: { max_attempts: 3, retry_backoff_seconds: 1, progress_report_seconds: 1, heartbeat_timeout_seconds: 15, stop_grace_seconds: 30, ...runtime },
  });
}

let env: TestWorkflowEnvironment;
let minio: TestMinio;
let work: string;

beforeAll(async () => {
  [env, minio] = await Promise.all([startTemporal(), startMinio()]);
  work = await mkdtemp(join(tmpdir(), 'lawgpt-chaos-'));
  await uploadDemoData(minio.client, chaosConfig('x', 0).data, { statutes: 6, cases: 2, records: 10 });
});
afterAll(async () => {
  await env?.teardown();
  await minio?.stop();
  await rm(work, { recursive: true, force: true });
});

const activities = (workDir: string, temporal: Client = env.client) =>
  createActivities({ s3: minio.client, settings: { LAWGPT_PYTHON: tools.python, LAWGPT_WORK_DIR: workDir }, temporal, trainerVersion: () => trainerVersion(tools.python) });

/** The step of the newest checkpoint the running pretrain stage has committed, once there is one. */
const committedCheckpoint = (handle: WorkflowHandle) =>
  waitFor('a committed pretrain checkpoint', async () => {
    const status = await handle.query(statusQuery);
    return status.stage === 'pretrain' && status.checkpoint !== null ? status.checkpoint : undefined;
  });

/** A worker process as operators run one (worker.ts), its output kept. */
function startWorkerProcess(queue: string, workDir: string, logLevel = 'INFO', extraEnv: NodeJS.ProcessEnv = {}) {
  const healthFile = join(work, `${queue}-${Date.now()}.alive`);
  const child = spawn(process.execPath, ['--import', 'tsx', 'worker.ts'], {
    env: {
      ...process.env,
      TEMPORAL_ADDRESS: env.connection.options.address,
      LAWGPT_TASK_QUEUE: queue,
      LAWGPT_S3_ENDPOINT: minio.endpoint,
      LAWGPT_S3_FORCE_PATH_STYLE: 'true',
      AWS_ACCESS_KEY_ID: minio.credentials.accessKeyId,
      AWS_SECRET_ACCESS_KEY: minio.credentials.secretAccessKey,
      LAWGPT_PYTHON: tools.python,
      LAWGPT_WORK_DIR: workDir,
      LAWGPT_LOG_LEVEL: logLevel,
      LAWGPT_HEALTH_FILE: healthFile,
      ...extraEnv,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let output = '';
  child.stdout!.on('data', (chunk) => (output += chunk));
  child.stderr!.on('data', (chunk) => (output += chunk));
  const exited = new Promise<number | NodeJS.Signals | null>((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal)));
  return { child, exited, output: () => output, healthFile };
}

function killGroup(child: ChildProcess) {
  try {
    process.kill(-child.pid!, 'SIGKILL');
  } catch {
    // already gone
  }
}

/**
 * Keeps the disk of `dir` full (ballast files topping it up to the last 64 KiB) until the returned
 * function is called, which removes the ballast.
 */
function keepFull(dir: string): () => Promise<void> {
  let stopped = false;
  let files = 0;
  const filling = (async () => {
    while (!stopped) {
      const { bavail, bsize } = await statfs(dir);
      const free = bavail * bsize;
      if (free > 256 << 10) await writeFile(join(dir, `ballast-${files++}`), Buffer.alloc(free - (64 << 10))).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  return async () => {
    stopped = true;
    await filling;
    for (const name of (await readdir(dir)).filter((n) => n.startsWith('ballast-'))) await rm(join(dir, name));
  };
}

async function committedSteps(runId: string): Promise<number[]> {
  const keys = await listKeys(minio.client, `s3://lawgpt-chaos/runs/${runId}/pretrain/checkpoints/`);
  return keys.filter((k) => k.endsWith('/manifest.json')).map((k) => Number(/checkpoint-(\d+)\//.exec(k)![1]));
}

describe('chaos', () => {
  it('SIGKILL of the trainer mid-training: the stage is retried and resumes from its last checkpoint', { timeout: 300_000 }, async () => {
    const workDir = join(work, 'kill-trainer');
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue: 'kill-trainer', workflowsPath, activities: activities(workDir), ...STAGE_WORKER_OPTIONS });
    const result = await worker.runUntil(async () => {
      const handle = await env.client.workflow.start(lawgptPipeline, { workflowId: 'kill-trainer', taskQueue: 'kill-trainer', args: [chaosConfig('kill-trainer', 1)] });
      const committed = await committedCheckpoint(handle);
      const [pid] = await findProcesses('lawgpt_trainer', 'pretrain', workDir);
      process.kill(pid, 'SIGKILL');
      console.log(`killed trainer pid ${pid} (SIGKILL) after checkpoint-${committed} was committed`);
      return { committed, value: await handle.result() };
    });
    const resumed = result.value.stages.pretrain!.metrics.resumed_from_step;
    console.log(`the run completed; the retried pretrain resumed from checkpoint-${resumed}`);
    expect(resumed).toBeGreaterThanOrEqual(result.committed);
  });

  it('SIGKILL of the worker: its DeepSpeed ranks die with it, another worker retries and resumes', { timeout: 300_000 }, async () => {
    const workDir = join(work, 'kill-worker');
    const first = startWorkerProcess('kill-worker', workDir);
    const handle = await env.client.workflow.start(lawgptPipeline, {
      workflowId: 'kill-worker',
      taskQueue: 'kill-worker',
      args: [chaosConfig('kill-worker', 2, 60, { master_port: 29611 })],
    });
    const committed = await committedCheckpoint(handle);
    const [launcher] = await findProcesses('deepspeed.launcher.launch', 'pretrain', workDir);
    const ranks = await findProcesses('-m lawgpt_trainer pretrain ', workDir);
    expect(ranks).toHaveLength(2);
    expect(Number((await readFile(`/proc/${launcher}/stat`, 'utf8')).split(') ')[1].split(' ')[1])).toBe(first.child.pid); // the launcher's parent
    process.kill(first.child.pid!, 'SIGKILL');
    console.log(`killed worker pid ${first.child.pid} (SIGKILL) after checkpoint-${committed}; its ranks were pids ${ranks.join(', ')}`);
    await waitFor('the orphaned launcher and ranks to exit', async () => ((await findProcesses('lawgpt_trainer', workDir)).length === 0 ? true : undefined), 30_000);
    console.log('the launcher and both ranks exited with their worker');

    const second = startWorkerProcess('kill-worker', workDir);
    try {
      const result = await handle.result();
      const resumed = result.stages.pretrain!.metrics.resumed_from_step;
      console.log(`a second worker completed the run, resuming pretrain from checkpoint-${resumed}`);
      expect(resumed).toBeGreaterThanOrEqual(committed);
    } finally {
      [first, second].forEach((w) => killGroup(w.child));
    }
  });

  it('SIGTERM to the worker: the trainer commits a final checkpoint, the worker exits, another resumes at once', { timeout: 300_000 }, async () => {
    const workDir = join(work, 'sigterm');
    // At DEBUG the workers log every line their trainers write: the secrets check reads them all.
    const first = startWorkerProcess('sigterm', workDir, 'DEBUG');
    // A heartbeat timeout longer than the test: the stage must be handed back, not timed out.
    const handle = await env.client.workflow.start(lawgptPipeline, {
      workflowId: 'sigterm',
      taskQueue: 'sigterm',
      args: [chaosConfig('sigterm', 6, 200, undefined, { heartbeat_timeout_seconds: 900 })],
    });
    let second: ReturnType<typeof startWorkerProcess> | undefined;
    try {
      await committedCheckpoint(handle);
      // A polling worker keeps its health file fresh (what the image's HEALTHCHECK reads).
      expect(Date.now() - (await stat(first.healthFile)).mtimeMs).toBeLessThan(60_000);
      const stepAtSigterm = (await handle.query(statusQuery)).step!;
      first.child.kill('SIGTERM');
      expect(await first.exited).toBe(0);
      expect(first.output()).toContain('worker stopped');
      const final = Math.max(...(await committedSteps('sigterm')));
      console.log(`SIGTERM at step ${stepAtSigterm}: the worker exited 0 after committing checkpoint-${final}`);
      expect(final).toBeGreaterThanOrEqual(stepAtSigterm);
      expect(await findProcesses('lawgpt_trainer', workDir)).toEqual([]);
      const [pending] = (await handle.describe()).raw.pendingActivities!;
      expect(pending.lastFailure?.applicationFailureInfo?.type).toBe('WorkerShutdown');

      second = startWorkerProcess('sigterm', workDir, 'DEBUG');
      const result = await handle.result();
      const resumed = result.stages.pretrain!.metrics.resumed_from_step;
      console.log(`a second worker resumed pretrain from checkpoint-${resumed} and completed the run`);
      expect(resumed).toBe(final);
      for (const output of [first.output(), second.output()]) {
        expect(output).toContain('[pretrain] '); // trainer output reached the log
        expect(output).not.toContain(minio.credentials.secretAccessKey);
      }
      await keepHistory(handle, 'worker-shutdown');
    } finally {
      [first, second].forEach((w) => w && killGroup(w.child));
    }
  });

  it('MinIO restarts while checkpoints upload: no partial checkpoint ever counts, the run completes', { timeout: 300_000 }, async () => {
    const workDir = join(work, 'minio-restart');
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue: 'minio-restart', workflowsPath, activities: activities(workDir), ...STAGE_WORKER_OPTIONS });
    const result = await worker.runUntil(async () => {
      const handle = await env.client.workflow.start(lawgptPipeline, { workflowId: 'minio-restart', taskQueue: 'minio-restart', args: [chaosConfig('minio-restart', 4, 150)] });
      await committedCheckpoint(handle);
      // Catch an upload in the act: a checkpoint newer than every committed one, with files but no
      // manifest yet (older manifest-less folders are being pruned, not uploaded).
      const prefix = 's3://lawgpt-chaos/runs/minio-restart/pretrain/checkpoints/';
      const inFlight = await waitFor(
        'a checkpoint upload in progress',
        async () => {
          const keys = await listKeys(minio.client, prefix);
          const step = (k: string) => Number(/checkpoint-(\d+)\//.exec(k)?.[1] ?? -1);
          const newestCommitted = Math.max(-1, ...keys.filter((k) => k.endsWith('/manifest.json')).map(step));
          const uploading = keys.map(step).filter((s) => s > newestCommitted);
          return uploading.length ? Math.min(...uploading) : undefined;
        },
        60_000,
        10,
      );
      await minio.restart(3_000);
      console.log(`restarted MinIO (down 3 s) while checkpoint-${inFlight} was half uploaded`);
      // The interrupted upload is retried, not abandoned: its manifest arrives once S3 is back
      // (watched closely, before retention may prune it for newer ones).
      await waitFor(`checkpoint-${inFlight} committed after the restart`, () => listKeys(minio.client, `${prefix}checkpoint-${inFlight}/manifest.json`).then((k) => (k.length ? true : undefined)), 60_000, 50);
      return handle.result();
    });
    expect(result.stages.pretrain).toBeDefined();

    const keys = await listKeys(minio.client, 's3://lawgpt-chaos/runs/minio-restart/pretrain/checkpoints/');
    const folders = [...new Set(keys.map((k) => k.slice(0, k.lastIndexOf('/') + 1)))];
    const committed = folders.filter((f) => keys.includes(`${f}manifest.json`));
    for (const folder of committed) {
      expect(await downloadVerified(minio.client, `s3://lawgpt-chaos/${folder}`, join(workDir, 'verify', folder))).toBeUndefined();
    }
    console.log(`the run completed; ${committed.length} committed checkpoints all verify; ${folders.length - committed.length} uncommitted left behind`);
    expect(committed.length).toBeGreaterThan(0);
  });

  it('the Temporal server restarts mid-stage: the stage goes on, runs once, and loses no checkpoint', { timeout: 300_000 }, async () => {
    const temporal = await startRestartableTemporal();
    const connection = await NativeConnection.connect({ address: temporal.address });
    const client = new Client({ connection: await Connection.connect({ address: temporal.address }) });
    try {
      const workDir = join(work, 'temporal-restart');
      const worker = await Worker.create({ connection, taskQueue: 'temporal-restart', workflowsPath, activities: activities(workDir, client), ...STAGE_WORKER_OPTIONS });
      // Every checkpoint is kept, so that each one can be found afterwards. The server is down for
      // less than the heartbeat timeout: longer, and the server would rightly take the stage for lost.
      const config = chaosConfig('temporal-restart', 7, 200, undefined, { heartbeat_timeout_seconds: 60, keep_checkpoints: 100 });
      const { result, history } = await worker.runUntil(async () => {
        const handle = await client.workflow.start(lawgptPipeline, { workflowId: 'temporal-restart', taskQueue: 'temporal-restart', args: [config] });
        const before = await committedCheckpoint(handle);
        await temporal.restart(2_000);
        console.log(`killed the Temporal server (SIGKILL) after checkpoint-${before}; it came back on its database file 2 s later`);
        return { result: await handle.result(), history: await handle.fetchHistory() };
      });
      const attempts = history.events!.flatMap((e) => (e.activityTaskStartedEventAttributes ? [e.activityTaskStartedEventAttributes.attempt] : []));
      const steps = (await committedSteps('temporal-restart')).sort((a, b) => a - b);
      console.log(`the run completed; activity attempts ${attempts.join(', ')}; ${steps.length} checkpoints committed`);
      expect(attempts.every((a) => a === 1)).toBe(true);
      expect(result.stages.pretrain!.metrics.resumed_from_step).toBe(0);
      expect(steps).toEqual(Array.from({ length: 200 / CHECKPOINT_STEPS }, (_, i) => (i + 1) * CHECKPOINT_STEPS));
    } finally {
      await client.connection.close();
      await connection.close();
      await temporal.stop();
    }
  });

  it('the disk fills while a checkpoint is saved: a clear error, nothing partial committed, the retry resumes once there is room', { timeout: 300_000 }, async () => {
    // The worker's work folder is a size-limited tmpfs (mounting it needs root, as CI has).
    const workDir = join(work, 'disk-full');
    await mkdir(workDir);
    await promisify(execFile)('mount', ['-t', 'tmpfs', '-o', 'size=160m', 'tmpfs', workDir]).catch((err: Error) => {
      throw new Error(`this test mounts a 160 MiB tmpfs as the work folder and needs root: ${err.message}`);
    });
    try {
      const worker = await Worker.create({ connection: env.nativeConnection, taskQueue: 'disk-full', workflowsPath, activities: activities(workDir), ...STAGE_WORKER_OPTIONS });
      const { result, history, newestBefore, uncommitted } = await worker.runUntil(async () => {
        const handle = await env.client.workflow.start(lawgptPipeline, { workflowId: 'disk-full', taskQueue: 'disk-full', args: [chaosConfig('disk-full', 8, 120, undefined, { max_attempts: 4 })] });
        await committedCheckpoint(handle);
        const [trainer] = await findProcesses('lawgpt_trainer', 'pretrain', workDir);
        const release = keepFull(workDir);
        await waitFor('the trainer to fail on the full disk', async () => ((await findProcesses('lawgpt_trainer', workDir)).includes(trainer) ? undefined : true), 120_000, 50);
        await release();
        const steps = await committedSteps('disk-full');
        const newestBefore = Math.max(...steps);
        // Whatever the failed save left has no manifest and was never handed over: no object of a later step.
        const keys = await listKeys(minio.client, 's3://lawgpt-chaos/runs/disk-full/pretrain/checkpoints/');
        const uncommitted = keys.filter((k) => Number(/checkpoint-(\d+)\//.exec(k)![1]) > newestBefore);
        console.log(`filled the work folder's disk; the trainer stopped with checkpoint-${newestBefore} the newest committed; disk freed`);
        return { result: await handle.result(), history: await handle.fetchHistory(), newestBefore, uncommitted };
      });
      const [last] = history.events!.flatMap((e) => (e.activityTaskStartedEventAttributes?.attempt! > 1 ? [e.activityTaskStartedEventAttributes!] : []));
      console.log(`attempt ${last.attempt} completed the stage after: ${last.lastFailure!.message!.split('\n')[0]}`);
      expect(uncommitted).toEqual([]);
      expect(last.lastFailure!.message).toMatch(/trainer pretrain exited with 1: no space left on the device of .*disk-full.*\(\d[\d,]* bytes free\)/);
      expect(last.lastFailure!.applicationFailureInfo!.type).toBe('TrainerFailed');
      expect(result.stages.pretrain!.metrics.resumed_from_step).toBe(newestBefore);
    } finally {
      // Nothing of the finished run may hold a file there (a trainer may take a moment to exit): the
      // worker once kept a failed attempt's TensorBoard file open, which also kept its deleted bytes
      // on the full disk. Whatever holds it is named, and the mount let go lazily.
      await waitFor('the work folder to unmount', () => promisify(execFile)('umount', [workDir]).then(() => true), 30_000, 200).catch(async (err: Error) => {
        const holders = await holdersOf(workDir);
        await promisify(execFile)('umount', ['--lazy', workDir]);
        throw new Error(`${err.message}; held by: ${holders.join('; ') || 'no process'}`);
      });
    }
  });

  it('pause frees the machine after a checkpoint; resume continues from it', { timeout: 300_000 }, async () => {
    const workDir = join(work, 'pause');
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue: 'pause', workflowsPath, activities: activities(workDir), ...STAGE_WORKER_OPTIONS });
    const result = await worker.runUntil(async () => {
      const handle = await env.client.workflow.start(lawgptPipeline, { workflowId: 'pause', taskQueue: 'pause', args: [chaosConfig('pause', 5, 120)] });
      await committedCheckpoint(handle);
      const paused = await handle.executeUpdate(pauseUpdate);
      const trainers = await findProcesses('lawgpt_trainer', workDir);
      const steps = await committedSteps('pause');
      console.log(`paused at step ${paused.step}; trainer processes left: ${trainers.length}; committed checkpoints: ${steps.join(', ')}`);
      expect(trainers).toEqual([]);
      expect(paused.stages.pretrain).toBe('paused');
      await handle.executeUpdate(resumeUpdate);
      return { pausedAt: Math.max(...steps), value: await handle.result() };
    });
    const resumed = result.value.stages.pretrain!.metrics.resumed_from_step;
    console.log(`resumed; pretrain continued from checkpoint-${resumed} and completed`);
    expect(resumed).toBe(result.pausedAt);
  });

  it('cancel during DeepSpeed training: both ranks stop, a final checkpoint is committed, the run is cancelled', { timeout: 300_000 }, async () => {
    const workDir = join(work, 'cancel');
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue: 'cancel', workflowsPath, activities: activities(workDir), ...STAGE_WORKER_OPTIONS });
    await worker.runUntil(async () => {
      const handle = await env.client.workflow.start(lawgptPipeline, { workflowId: 'cancel', taskQueue: 'cancel', args: [chaosConfig('cancel', 3, 5000, { master_port: 29612 })] });
      await committedCheckpoint(handle);
      const stepAtCancel = (await handle.query(statusQuery)).step!;
      await handle.cancel();
      console.log(`cancelled the run at pretrain step ${stepAtCancel}`);
      const error = await handle.result().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(WorkflowFailedError);
      expect((error as WorkflowFailedError).cause).toBeInstanceOf(CancelledFailure);
      expect((await handle.describe()).status.name).toBe('CANCELLED');

      await waitFor('no trainer process left', async () => ((await findProcesses('lawgpt_trainer', workDir)).length === 0 ? true : undefined), 30_000);
      const steps = await committedSteps('cancel');
      console.log(`no trainer process left; committed checkpoints: ${steps.sort((a, b) => a - b).join(', ')}`);
      expect(Math.max(...steps)).toBeGreaterThanOrEqual(stepAtCancel);
      expect((await handle.query(statusQuery)).stages.pretrain).toBe('cancelled');
    });
  });

  // The README's "Several nodes", done on one machine: two hosts, 127.0.0.1 and 127.0.0.2, each
  // its own sshd; the worker reaches them with pdsh over ssh, its options in PDSH_SSH_ARGS_APPEND.
  it('two hosts over ssh: both ranks train, a checkpoint holds both ranks\' state, killing the remote rank fails the stage and the retry resumes', { timeout: 400_000 }, async () => {
    const hosts = await startSshHosts(['127.0.0.1', '127.0.0.2'], join(work, 'ssh'));
    const workDir = join(work, 'two-hosts');
    const worker = startWorkerProcess('two-hosts', workDir, 'INFO', { PDSH_SSH_ARGS_APPEND: `-F ${hosts.sshConfig}` });
    try {
      const twoHosts = { master_port: 29623, master_addr: '127.0.0.1', hosts: [{ host: '127.0.0.1', slots: 1 }, { host: '127.0.0.2', slots: 1 }] };
      const handle = await env.client.workflow.start(lawgptPipeline, { workflowId: 'two-hosts', taskQueue: 'two-hosts', args: [chaosConfig('two-hosts', 6, 60, twoHosts)] });
      const committed = await committedCheckpoint(handle);
      const ranks = await findProcesses('-m lawgpt_trainer pretrain ', workDir);
      expect(ranks).toHaveLength(2);
      // Across hosts the ranks start once the request is written, never to wait for it.
      expect(await findProcesses('-m lawgpt_trainer', '--wait-for-request', workDir)).toEqual([]);
      // Each rank was started by the sshd of its host: rank 0 under 127.0.0.1's, rank 1 under 127.0.0.2's.
      const byRank = Object.fromEntries(await Promise.all(ranks.map(async (pid) => [await rankOf(pid), pid] as const)));
      expect(await ancestors(byRank[0])).toContain(hosts.sshd['127.0.0.1']);
      expect(await ancestors(byRank[1])).toContain(hosts.sshd['127.0.0.2']);

      process.kill(byRank[1], 'SIGKILL');
      console.log(`killed rank 1 (pid ${byRank[1]}, on host 127.0.0.2) after checkpoint-${committed}`);
      const result = await handle.result();
      const pretrain = result.stages.pretrain!;
      console.log(`the retried pretrain resumed from checkpoint-${pretrain.metrics.resumed_from_step} on both hosts and completed`);
      expect(pretrain.metrics.resumed_from_step).toBeGreaterThanOrEqual(committed);
      expect(pretrain.metrics.processes).toBe(2);
      // The first attempt failed, the second completed: each left its metrics.
      const parts = await listKeys(minio.client, 's3://lawgpt-chaos/runs/two-hosts/pretrain/metrics/');
      expect(parts.map((k) => /\d{13}-(attempt-\d)\/part-00000\.jsonl$/.exec(k)![1]).sort()).toEqual(['attempt-1', 'attempt-2']);
      // A committed checkpoint holds both ranks' state, every file hashed into its manifest.
      const [step] = (await committedSteps('two-hosts')).sort((a, b) => b - a);
      const manifest = JSON.parse((await getText(minio.client, `s3://lawgpt-chaos/runs/two-hosts/pretrain/checkpoints/checkpoint-${step}/manifest.json`))!);
      const files = manifest.files.map((f: { path: string }) => f.path);
      expect(manifest.world_size).toBe(2);
      for (const rank of [0, 1]) {
        expect(files).toContain(`rng_state_${rank}.pth`);
        expect(files.some((f: string) => new RegExp(`zero_pp_rank_${rank}_mp_rank_00_optim_states\\.pt$`).test(f))).toBe(true);
      }
      // Both attempts went through both hosts' sshd.
      for (const address of ['127.0.0.1', '127.0.0.2']) expect((await hosts.log(address)).match(/Accepted publickey/g)).toHaveLength(2);
    } finally {
      killGroup(worker.child);
      await hosts.stop();
    }
  });
});

/** The RANK a trainer process was started with. */
async function rankOf(pid: number): Promise<number> {
  const environ = (await readFile(`/proc/${pid}/environ`, 'utf8')).split('\0');
  return Number(environ.find((v) => v.startsWith('RANK='))!.slice(5));
}

/** The pids above a process, up to init. */
async function ancestors(pid: number): Promise<number[]> {
  const found = [];
  for (let p = pid; p > 1; ) {
    p = Number((await readFile(`/proc/${p}/stat`, 'utf8')).split(') ')[1].split(' ')[1]);
    found.push(p);
  }
  return found;
}
