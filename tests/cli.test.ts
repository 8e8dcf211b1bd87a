// start-run.ts as people run it, against the real Temporal dev server and MinIO; the stages are
// stand-ins (no trainer), so that runs move as each test needs.
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ApplicationFailure } from '@temporalio/common';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createReportActivities } from '../activities/report.js';
import { getText, putText } from '../activities/s3.js';
import { cacheKey, inputObjects, recordStage } from '../activities/stage-cache.js';
import { trainerVersion } from '../activities/trainer-process.js';
import { parseRunConfig } from '../common/config.js';
import { stageTask, type StageResult, type StageTask } from '../common/run.js';
import { STAGE_IO } from '../common/stages.js';
import { uploadDemoData } from '../infra/demo-data.js';
import { startMinio, type TestMinio } from './helpers/minio.js';
import { halt, waitFor } from './helpers/processes.js';
import { inBackground, startTemporal, workflowsPath } from './helpers/temporal.js';
import { tools } from './helpers/tools.js';

let env: TestWorkflowEnvironment;
let minio: TestMinio;
let work: string;
let stopWorker: (() => Promise<void>) | undefined;

const BUCKET = 'lawgpt-cli';
const demo = JSON.parse(await readFile(new URL('../configs/demo.json', import.meta.url), 'utf8'));
const data = { ...demo.data, corpus: `s3://${BUCKET}/data/corpus/`, dialogue: `s3://${BUCKET}/data/dialogue.jsonl`, exam: `s3://${BUCKET}/data/exam.jsonl`, instructions: undefined };

/** Writes a run config (the demo's, on this test's bucket) and returns its path. */
async function configFile(name: string, overrides: object = {}) {
  const path = join(work, `${name}.json`);
  await writeFile(path, JSON.stringify({ ...demo, name, bucket: BUCKET, data, ...overrides }));
  return path;
}

/** A stand-in stage: outputs at the real URIs, and a run named `failing` fails its first stage for good. */
async function runStage(task: StageTask): Promise<StageResult> {
  if (task.runId.startsWith('failing-')) throw ApplicationFailure.nonRetryable('the corpus is unreadable', 'InvalidInput');
  const outputs = Object.fromEntries(STAGE_IO[task.stage].outputs.map((o) => [o, `s3://${task.bucket}/runs/${task.runId}/${task.stage}/${o}/`]));
  // As if it had trained on eight GPUs for 7.5 minutes.
  return { stage: task.stage, outputs, metrics: { steps: 1 }, usage: { device: 'GPU', processes: 8, wallSeconds: 450, deviceHours: 1, tokens: 1000 } };
}

async function cli(...args: string[]) {
  return cliOn('cli', ...args);
}

const environment = (taskQueue: string) => ({
  ...process.env,
  TEMPORAL_ADDRESS: env.connection.options.address,
  LAWGPT_TASK_QUEUE: taskQueue,
  LAWGPT_S3_ENDPOINT: minio.endpoint,
  LAWGPT_S3_FORCE_PATH_STYLE: 'true',
  AWS_ACCESS_KEY_ID: minio.credentials.accessKeyId,
  AWS_SECRET_ACCESS_KEY: minio.credentials.secretAccessKey,
  LAWGPT_PYTHON: tools.python,
});

/** start-run.ts with runs started on `taskQueue`. */
async function cliOn(taskQueue: string, ...args: string[]) {
  return promisify(execFile)(process.execPath, ['--import', 'tsx', 'start-run.ts', ...args], { env: environment(taskQueue) }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (err: { code: number; stdout: string; stderr: string }) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr }),
  );
}

beforeAll(async () => {
  [env, minio] = await Promise.all([startTemporal(), startMinio()]);
  work = await mkdtemp(join(tmpdir(), 'lawgpt-cli-'));
  await uploadDemoData(minio.client, parseRunConfig({ ...demo, bucket: BUCKET, data }).data, { statutes: 3, cases: 1, records: 10 });
  const worker = await Worker.create({ connection: env.nativeConnection, taskQueue: 'cli', workflowsPath, activities: { runStage, stageCache: async () => ({}), ...createReportActivities({ s3: minio.client }) } });
  stopWorker = inBackground(worker);
});
afterAll(async () => {
  await stopWorker?.();
  await env?.teardown();
  await minio?.stop();
  await rm(work, { recursive: true, force: true });
});

describe('start-run.ts', () => {
  it('has --help on every command; a wrong option is exit 2, an unknown run or an unreachable server exit 3, each in one line', async () => {
    for (const command of ['', 'start', 'list', 'status', 'follow', 'report', 'cancel', 'pause', 'resume', 'approve']) {
      const help = await cli(...(command ? [command] : []), '--help');
      expect(help.code).toBe(0);
      expect(help.stdout).toMatch(/^Usage: start-run/);
    }
    const wrong = await cli('list', '--status', 'sleeping');
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toMatch(/^error: option '--status <status>' argument 'sleeping' is invalid/);
    expect(await cli('status', 'no-such-run')).toMatchObject({ code: 3, stderr: 'run no-such-run not found\n' });
    expect(await cli('report', 'some-run', '--out', join(work, 'report.json'))).toMatchObject({ code: 2, stderr: `--out ${join(work, 'report.json')}: the report is a page; name it .html (its data is saved beside it as .json)\n` });
    // A mistyped command is not taken for a config file.
    for (const typo of [['show', 'some-run'], ['stauts']]) {
      expect(await cli(...typo)).toMatchObject({ code: 2, stderr: `error: '${typo[0]}' is neither a command (${['start', 'list', 'status', 'follow', 'report', 'cancel', 'pause', 'resume', 'approve', 'help'].join(', ')}) nor a config file\n` });
    }
    const down = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'start-run.ts', 'list'], { env: { ...process.env, TEMPORAL_ADDRESS: '127.0.0.1:1' } }).catch((e) => e);
    expect(down.code).toBe(3);
    expect(down.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^Temporal is not reachable at 127\.0\.0\.1:1: /)]);
  });

  it('refuses a run whose bucket, data or given artifacts are not there, naming each by its config fields with the stages that read it, and starts nothing', async () => {
    // A folder holding nothing but the marker the S3 console's "Create folder" makes is empty.
    await putText(minio.client, `s3://${BUCKET}/empty/`, '');
    // dialogue names one object: the start of another object's key is not it.
    const missing = await configFile('missing', { data: { ...data, corpus: `s3://${BUCKET}/empty/`, dialogue: `s3://${BUCKET}/data/dialogue`, exam: 's3://no-such-bucket/exam.jsonl' } });
    for (const args of [[missing], ['start', missing, '--dry-run']]) {
      const refused = await cli(...args);
      expect(refused).toMatchObject({ code: 2, stdout: '' });
      expect(refused.stderr.trim().split('\n')).toEqual([
        "the run's data is not all there (3):",
        `  data.corpus (read by vocab, pretrain, eval): nothing at s3://${BUCKET}/empty/`,
        `  data.dialogue (read by sft): nothing at s3://${BUCKET}/data/dialogue`,
        "  data.exam (read by sft, eval): no bucket 'no-such-bucket' for s3://no-such-bucket/exam.jsonl",
        'nothing was started.',
      ]);
    }
    const given = `s3://${BUCKET}/models/none/`;
    const artifacts = await cli(await configFile('given', { stages: ['vocab', 'pretrain'], artifacts: { base: { tokenizer: given, model: given } } }));
    expect(artifacts).toMatchObject({ code: 2, stderr: expect.stringContaining(`  artifacts.base.tokenizer, artifacts.base.model (read by vocab, pretrain): nothing at ${given}\n`) });
    const noBucket = await cli(await configFile('nobucket', { bucket: 'no-such-bucket' }));
    expect(noBucket).toMatchObject({ code: 2, stderr: expect.stringContaining("  bucket: no bucket 'no-such-bucket' to write the run's artifacts to\n") });
    const listed = [];
    for await (const run of env.client.workflow.list()) listed.push(run);
    expect(listed).toEqual([]);
  });

  it('start --dry-run prints stages, cache hits, input sizes, tokens and compute with --set applied, and starts nothing', { timeout: 60_000 }, async () => {
    // An earlier identical base stage, recorded in the stage cache with its outputs in place.
    const config = parseRunConfig({ ...demo, name: 'planned', bucket: BUCKET, data });
    const task = stageTask('earlier', config, 'base', {});
    const outputs = { tokenizer: `s3://${BUCKET}/runs/earlier/base/tokenizer/`, model: `s3://${BUCKET}/runs/earlier/base/model/` };
    for (const uri of Object.values(outputs)) await putText(minio.client, `${uri}file`, 'x');
    await recordStage(minio.client, task, cacheKey(task, await inputObjects(minio.client, task.inputs), await trainerVersion(tools.python)), { stage: 'base', outputs, metrics: {} });

    const plan = await cli('start', await configFile('planned'), '--dry-run', '--set', 'pretrain.max_steps=1000', '--set', 'pretrain.global_batch_size=16');
    expect(plan.code).toBe(0);
    expect(plan.stdout).toContain('base     cache hit (outputs of run earlier)');
    // vocab reads the cached base tokenizer, a real object, and the corpus with its size and tokens.
    expect(plan.stdout).toMatch(new RegExp(`base_tokenizer: 1 objects, .*${outputs.tokenizer}`));
    expect(plan.stdout).toMatch(new RegExp(`corpus: 4 objects, [\\d.]+ KiB, ~[\\d.]+k tokens  s3://${BUCKET}/data/corpus/`));
    // pretrain: 1000 steps x 16 sequences x 128 tokens.
    expect(plan.stdout).toMatch(/pretrain runs: ~[\d.]+ CPU-hours, 2\.0M tokens/);
    expect(plan.stdout).toContain('tokenizer: made by this run');
    expect(plan.stdout).toMatch(/^ {2}total: ~0\.00 GPU-hours and ~[\d.]+ CPU-hours for stages that would run/m);
    expect(plan.stdout).toMatch(/^plan for planned \([\d.]+M parameters, the shape of base\.\*; nothing started\):/);

    // A run given LLaMA-7B is sized by the model's own config.json, on the GPU its task queue sends sft to.
    const llama = `s3://${BUCKET}/models/llama-7b/`;
    const llamaShape = { hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 32, vocab_size: 32000 };
    await putText(minio.client, `${llama}config.json`, JSON.stringify({ architectures: ['LlamaForCausalLM'], ...llamaShape }));
    const tuned = { stages: ['sft'], artifacts: { pretrain: { model: llama } }, runtime: { task_queues: { sft: 'lawgpt-gpu' } } };
    const sized = await cli('start', await configFile('tuned', tuned), '--dry-run');
    expect(sized.stdout).toContain(`plan for tuned (6.74B parameters, the shape of ${llama}config.json; nothing started):`);
    expect(sized.stdout).toMatch(/sft {6}runs: ~[\d.]+ GPU-hours, 61\.4k tokens/);
    // A model folder without a readable config.json is sized as base.* says, and the plan says so.
    const bare = `s3://${BUCKET}/models/bare/`;
    await putText(minio.client, `${bare}model.safetensors`, 'x');
    const guessed = await cli('start', await configFile('guessed', { ...tuned, artifacts: { pretrain: { model: bare } } }), '--dry-run');
    expect(guessed.stdout).toContain(`the shape of base.* (no LLaMA config.json readable at ${bare}config.json); nothing started`);
    const listed = [];
    for await (const run of env.client.workflow.list()) listed.push(run);
    expect(listed).toEqual([]);
  });

  it('start (short form), list --corpus, status, approve and follow a run to its end', { timeout: 90_000 }, async () => {
    const started = await cli(await configFile('approved', { stages: ['base', 'vocab'], runtime: { approve_before: 'vocab' } }));
    expect(started.code).toBe(0);
    const id = /started run (\S+)/.exec(started.stdout)![1];

    const listed = await cli('list', '--corpus', data.corpus, '--status', 'running');
    expect(listed.stdout).toMatch(new RegExp(`^${id}\\trunning\\t.*\\tapproved\\tcli\\t${data.corpus}\\t`, 'm'));
    expect((await cli('list', '--corpus', 's3://elsewhere/corpus/')).stdout).toBe('no runs\n');

    await waitFor('the run to wait for approval', async () => ((await cli('status', id)).stdout.includes('vocab    awaiting-approval') ? true : undefined), 30_000, 500);
    const status = await cli('status', id);
    expect(status.stdout).toMatch(/base {5}completed/);
    expect(status.stdout).toContain('\n  cost so far: 1.000 GPU-hours');
    // A report of the run as it stands, built now: no run writes its own before it ends.
    const early = await cli('report', id, '--out', join(work, 'early.html'));
    expect(early).toMatchObject({ code: 0, stdout: `report of run ${id} (running, built now) saved to ${join(work, 'early.html')}\n` });
    expect(JSON.parse(await readFile(join(work, 'early.json'), 'utf8')).stages.map((s: { state: string }) => s.state)).toEqual(['completed', 'awaiting-approval']);
    expect(await readFile(join(work, 'early.html'), 'utf8')).toMatch(/^<!doctype html>/);
    expect(status.stdout).toContain(`tokenizer: s3://${BUCKET}/runs/${id}/base/tokenizer/`);
    expect(await cli('resume', id)).toMatchObject({ code: 2, stderr: expect.stringMatching(/refused resume/) });
    expect(await cli('approve', id)).toMatchObject({ code: 0 });

    const followed = await cli('follow', id);
    expect(followed.code).toBe(0);
    expect(followed.stdout).toContain(`vocab.tokenizer: s3://${BUCKET}/runs/${id}/vocab/tokenizer/`);
    const finished = (await cli('status', id)).stdout;
    expect(finished).toMatch(new RegExp(`^run ${id}: completed`));
    expect(finished).toMatch(/vocab {4}completed {9}1\.000 GPU-hours \(8 × 450 s\), 1000 tokens/);
    expect(finished).toContain('\n  cost: 2.000 GPU-hours, 0.000 CPU-hours, 2000 tokens trained');
    expect(followed.stdout).toContain('cost: 2.000 GPU-hours, 0.000 CPU-hours, 2000 tokens trained');
    const page = `s3://${BUCKET}/runs/${id}/report/index.html`;
    expect(followed.stdout).toContain(`report: ${page}`);
    // Once it has ended, the run's own report, fetched.
    const fetched = await cli('report', id, '--out', join(work, 'final.html'));
    expect(fetched.stdout).toBe(`report of run ${id} (written by the run to ${page}) saved to ${join(work, 'final.html')}\n`);
    expect(await readFile(join(work, 'final.html'), 'utf8')).toBe(await getText(minio.client, page));
    expect(JSON.parse(await readFile(join(work, 'final.json'), 'utf8')).usage).toEqual({ gpu_hours: 2, cpu_hours: 0, tokens: 2000 });
  });

  it('a run that fails is exit 1 when followed; cancel stops a waiting run', { timeout: 90_000 }, async () => {
    const failing = /started run (\S+)/.exec((await cli(await configFile('failing', { stages: ['base'] }))).stdout)![1];
    const followed = await cli('follow', failing);
    expect(followed.code).toBe(1);
    expect(followed.stderr.trim().split('\n')).toEqual([`run ${failing} failed: stage base failed: the corpus is unreadable`]);
    for (const action of ['cancel', 'pause', 'approve']) {
      expect(await cli(action, failing)).toMatchObject({ code: 2, stderr: `run ${failing} has ended (failed): nothing to ${action}\n` });
    }

    const waiting = /started run (\S+)/.exec((await cli(await configFile('cancelled', { stages: ['base'], runtime: { approve_before: 'base' } }))).stdout)![1];
    await waitFor('the run to wait', async () => ((await cli('status', waiting)).stdout.includes('awaiting-approval') ? true : undefined), 30_000, 500);
    expect((await cli('cancel', waiting)).code).toBe(0);
    await waitFor('the run to be cancelled', async () => ((await cli('status', waiting)).stdout.startsWith(`run ${waiting}: cancelled`) ? true : undefined), 30_000, 500);
  });

  it('on a run no worker polls for, status and the controls say so at once instead of waiting; cancel is recorded', { timeout: 60_000 }, async () => {
    const id = /started run (\S+)/.exec((await cliOn('nobody', await configFile('unattended', { stages: ['base'] }))).stdout)![1];
    const unanswered = `run ${id} is running, but no worker polls its task queue 'nobody' to answer: start one (npm run worker)\n`;
    for (const args of [['status', id], ['pause', id], ['approve', id], ['report', id, '--out', join(work, 'unattended.html')]]) {
      expect(await cli(...args)).toMatchObject({ code: 3, stderr: unanswered });
    }
    const following = spawn(process.execPath, ['--import', 'tsx', 'start-run.ts', 'follow', id], { env: environment('cli') });
    let followed = '';
    following.stdout.on('data', (chunk) => (followed += chunk));
    await waitFor('follow to say what it waits for', async () => (followed.includes("waiting for a worker: none polls task queue 'nobody' yet (npm run worker starts one)\n") ? true : undefined), 30_000);
    await halt(following);
    const cancelled = await cli('cancel', id);
    expect(cancelled).toMatchObject({ code: 0, stdout: `cancel requested for run ${id}: the running stage commits a checkpoint and stops (no worker polls its task queue 'nobody' yet: it stops once one does)\n` });
    await env.client.workflow.getHandle(id).terminate('test over');
    // Once it has ended, following it waits for no worker.
    const ended = await cli('follow', id);
    expect(ended.code).toBe(1);
    expect(ended.stdout).not.toContain('waiting for a worker');
  });
});
