// P3 and P6 from the same runs: a pretrain stage through the real workflow, worker and MinIO whose
// trainer is SIGKILLed at random intervals; every attempt resumes from the newest committed
// checkpoint. The worker's python is a thin wrapper that stamps each event line the trainer writes
// with the time it arrived, so every step executed, every kill and every first step after a resume
// is counted exactly.
//   P3 goodput = useful steps (the run's) ÷ steps executed (over all attempts)
//   P6 resume latency = kill -> first new step ÷ (that checkpoint's download + a model load in a
//                       fresh interpreter, each measured alone)
import { execFile } from 'node:child_process';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Worker } from '@temporalio/worker';
import { checkpointsPrefix, downloadVerified } from '../activities/checkpoints.js';
import { deletePrefix, downloadArtifact } from '../activities/s3.js';
import { createActivities } from '../activities/index.js';
import { STAGE_WORKER_OPTIONS } from '../activities/stage.js';
import { trainerEnv, trainerVersion } from '../activities/trainer-process.js';
import { parseRunConfig, type RunConfig } from '../common/config.js';
import type { PipelineResult } from '../common/run.js';
import { uploadDemoData } from '../infra/demo-data.js';
import { findProcesses } from '../tests/helpers/processes.js';
import { lawgptPipeline } from '../workflows/pipeline.js';
import { median, type BenchContext, type Measured } from './context.js';

const BUCKET = 'bench-faults';
const CHECKPOINT_STEPS = { quick: 4, full: 10 } as const;
// How long an attempt trains before it is killed, in seconds: a uniform draw from this range.
const TRAINS_FOR = { quick: [1.5, 2.5], full: [40, 80] } as const;
// --quick is a smoke run: one kill per run keeps it short.
const KILLS_PER_RUN = { quick: 1, full: Infinity } as const;

interface Kill {
  at: number;
  /** When the next attempt's trainer was launched and sent its `started` (its request read). */
  launchAt: number;
  startedAt: number;
  /** When the next attempt's first step arrived, and which step it was. */
  firstStepAt: number;
  firstStep: number;
}

interface FaultRun {
  runId: string;
  useful: number;
  executed: number;
  kills: Kill[];
}

// Big enough that a step takes a fraction of a second on 2 cores, so kills land mid-training
// (--quick: the demo's tiny shape, a kill or two per run, and the base tokenizer as it comes,
// since what is measured starts at pretrain: no vocab stage to wait for).
function faultConfig(ctx: BenchContext, name: string, artifacts?: RunConfig['artifacts']): RunConfig {
  return parseRunConfig({
    name,
    bucket: BUCKET,
    stages: artifacts ? ['pretrain'] : ctx.quick ? ['base'] : ['base', 'vocab'],
    artifacts: artifacts ?? {},
    data: { corpus: `s3://${BUCKET}/data/corpus/` },
    base: ctx.quick ? {} : { hidden_size: 256, intermediate_size: 688, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 4 },
    vocab: { vocab_size: 3000, input_sentence_size: 50000 },
    pretrain: { max_steps: ctx.quick ? 12 : 400, micro_batch_size: 4, block_size: 128, checkpoint_steps: CHECKPOINT_STEPS[ctx.quick ? 'quick' : 'full'], eval_blocks: 0, logging_steps: 1, learning_rate: 1e-3 },
    runtime: { cache: false, max_attempts: 20, progress_report_seconds: 5, keep_checkpoints: 1000, heartbeat_timeout_seconds: 30 },
  });
}

/**
 * A python that stamps every stdout line of the real one (the trainer's events) into `log`, and
 * its own start as a `launch` line.
 */
async function stampingPython(ctx: BenchContext, log: string): Promise<string> {
  const path = join(ctx.work, 'faults', 'python');
  await writeFile(
    path,
    [
      '#!/usr/bin/env bash',
      `printf '%s\\t{"event":"launch"}\\n' "$EPOCHREALTIME" >> ${JSON.stringify(log)}`,
      `${JSON.stringify(ctx.python)} "$@" | while IFS= read -r line; do`,
      `  printf '%s\\t%s\\n' "$EPOCHREALTIME" "$line" >> ${JSON.stringify(log)}`,
      `  printf '%s\\n' "$line"`,
      'done',
      'exit "${PIPESTATUS[0]}"',
      '',
    ].join('\n'),
  );
  await chmod(path, 0o755);
  return path;
}

interface Stamped {
  at: number;
  event: { event: string; step?: number; pid?: number };
}

async function stampedEvents(log: string): Promise<Stamped[]> {
  const text = await readFile(log, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((line) => line.includes('\t{'))
    .map((line) => {
      const [at, json] = line.split('\t');
      return { at: Number(at), event: JSON.parse(json) };
    });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let memo: Promise<{ runs: FaultRun[]; modelLoadSeconds: number[]; downloads: number[] }> | undefined;

/** The fault-injected runs, made once for both benchmarks. */
function faultRuns(ctx: BenchContext) {
  memo ??= makeFaultRuns(ctx);
  return memo;
}

async function makeFaultRuns(ctx: BenchContext) {
  const [env, minio] = await Promise.all([ctx.services.temporal(), ctx.services.minio()]);
  const dir = join(ctx.work, 'faults');
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const log = join(dir, 'events.log');
  await uploadDemoData(minio.client, faultConfig(ctx, 'x').data, ctx.quick ? { statutes: 4, cases: 2, records: 10 } : { statutes: 12, cases: 4, records: 10 });
  const worker = await Worker.create({
    connection: env.nativeConnection,
    taskQueue: 'bench-faults',
    workflowBundle: await ctx.services.workflowBundle(),
    activities: createActivities({
      s3: minio.client,
      settings: { LAWGPT_PYTHON: await stampingPython(ctx, log), LAWGPT_WORK_DIR: join(dir, 'work') },
      temporal: env.client,
      trainerVersion: () => trainerVersion(ctx.python),
    }),
    ...STAGE_WORKER_OPTIONS,
  });
  const runs: FaultRun[] = [];
  const downloads: number[] = [];
  let modelDir = '';
  await worker.runUntil(async () => {
    const made: PipelineResult = await env.client.workflow.execute(lawgptPipeline, { workflowId: `bench-faults-setup-${Date.now()}`, taskQueue: 'bench-faults', args: [faultConfig(ctx, 'setup')] });
    const artifacts = { base: { model: made.stages.base!.outputs.model }, vocab: { tokenizer: (made.stages.vocab ?? made.stages.base)!.outputs.tokenizer } };
    modelDir = (await downloadArtifact(minio.client, artifacts.base.model, join(dir, 'base-model'))).path;
    for (let i = 0; i < ctx.repeats; i++) {
      const config = faultConfig(ctx, `faults-${i}`, artifacts);
      await rm(log, { force: true });
      const runId = `bench-faults-${i}-${Date.now()}`;
      const handle = await env.client.workflow.start(lawgptPipeline, { workflowId: runId, taskQueue: 'bench-faults', args: [config] });
      let finished = false;
      const result = handle.result().finally(() => (finished = true));
      const killedAt: number[] = [];
      const mode = ctx.quick ? 'quick' : 'full';
      const [shortest, longest] = TRAINS_FOR[mode];
      let trainsFor = shortest + Math.random() * (longest - shortest);
      while (!finished) {
        await Promise.race([result.catch(() => undefined), sleep(250)]);
        const events = await stampedEvents(log);
        // The attempt started after the last kill, once it has trained for `trainsFor` seconds.
        const started = events.findLastIndex((e) => e.event.event === 'started' && e.at > (killedAt.at(-1) ?? 0));
        const firstStep = started >= 0 ? events.slice(started).find((e) => e.event.event === 'progress') : undefined;
        if (finished || !firstStep || Date.now() / 1000 - firstStep.at < trainsFor || killedAt.length >= KILLS_PER_RUN[mode]) continue;
        const pids = await findProcesses('lawgpt_trainer', 'pretrain', runId);
        if (!pids.length) continue;
        for (const pid of pids) process.kill(pid, 'SIGKILL');
        killedAt.push(Date.now() / 1000);
        trainsFor = shortest + Math.random() * (longest - shortest);
      }
      await result;
      const events = await stampedEvents(log);
      const progress = events.filter((e) => e.event.event === 'progress');
      const after = (event: string, at: number) => events.find((e) => e.event.event === event && e.at > at)!;
      const kills = killedAt.map((at) => {
        const next = after('progress', at);
        return { at, launchAt: after('launch', at).at, startedAt: after('started', at).at, firstStepAt: next.at, firstStep: next.event.step! };
      });
      for (const kill of kills) {
        // A kill before the first checkpoint starts the stage over: nothing to download.
        if (kill.firstStep === 1) {
          downloads.push(0);
          continue;
        }
        const checkpoint = `${checkpointsPrefix({ bucket: BUCKET, runId, stage: 'pretrain' })}checkpoint-${kill.firstStep - 1}/`;
        const t0 = performance.now();
        const problem = await downloadVerified(minio.client, checkpoint, join(dir, 'download'));
        if (problem) throw new Error(`${checkpoint}: ${problem}`);
        downloads.push((performance.now() - t0) / 1000);
        await rm(join(dir, 'download'), { recursive: true, force: true });
      }
      runs.push({ runId, useful: config.pretrain.max_steps, executed: progress.length, kills });
      // Every checkpoint is kept while the run is measured; none is needed after.
      await deletePrefix(minio.client, `s3://${BUCKET}/runs/${runId}/`);
    }
  });
  const modelLoadSeconds: number[] = [];
  for (let i = 0; i < (ctx.quick ? 1 : 3); i++) {
    const t0 = performance.now();
    await promisify(execFile)(ctx.python, ['-c', `from transformers import AutoModelForCausalLM; AutoModelForCausalLM.from_pretrained(${JSON.stringify(modelDir)})`], { env: trainerEnv() });
    modelLoadSeconds.push((performance.now() - t0) / 1000);
  }
  return { runs, modelLoadSeconds, downloads };
}

export async function goodput(ctx: BenchContext): Promise<Measured> {
  const { runs } = await faultRuns(ctx);
  return {
    ours: runs.map((r) => r.useful / r.executed),
    notes: {
      kills: runs.map((r) => r.kills.length).join(','),
      steps_executed: runs.map((r) => r.executed).join(','),
      useful_steps: runs[0].useful,
      checkpoint_steps: CHECKPOINT_STEPS[ctx.quick ? 'quick' : 'full'],
      seconds_trained_between_kills: TRAINS_FOR[ctx.quick ? 'quick' : 'full'].join('-'),
    },
  };
}

export async function resumeLatency(ctx: BenchContext): Promise<Measured> {
  const { runs, modelLoadSeconds, downloads } = await faultRuns(ctx);
  const kills = runs.flatMap((r) => r.kills);
  const load = median(modelLoadSeconds);
  return {
    ours: kills.map((k) => k.firstStepAt - k.at),
    peer: downloads.map((d) => d + load),
    notes: {
      model_load_seconds: load,
      checkpoint_download_seconds: median(downloads),
      // Where ours goes: Temporal's retry and the new attempt's setup; the trainer's imports
      // alongside the downloads, until the request is written; its load and first step.
      kill_to_launch_seconds: median(kills.map((k) => k.launchAt - k.at)),
      launch_to_request_read_seconds: median(kills.map((k) => k.startedAt - k.launchAt)),
      request_read_to_first_step_seconds: median(kills.map((k) => k.firstStepAt - k.startedAt)),
    },
  };
}
