// P1, orchestration overhead: the demo pipeline as a user runs it (a Temporal workflow, a worker,
// every input and output through MinIO, checkpoints uploaded), against the same trainer commands
// run one after another by a plain shell script on local copies of the same data. With --quick,
// the base stage alone.
import { spawn } from 'node:child_process';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Worker } from '@temporalio/worker';
import { trainerStart } from '../activities/deepspeed-launch.js';
import { downloadArtifact } from '../activities/s3.js';
import { createActivities } from '../activities/index.js';
import { STAGE_WORKER_OPTIONS, trainerRequest } from '../activities/stage.js';
import { trainerEnv, trainerVersion } from '../activities/trainer-process.js';
import { parseRunConfig, type RunConfig } from '../common/config.js';
import { trainerArgs } from '../common/contract.js';
import { inputsOf, STAGE_IO, type StageOutputs } from '../common/stages.js';
import { DEMO_SIZE, uploadDemoData } from '../infra/demo-data.js';
import { lawgptPipeline } from '../workflows/pipeline.js';
import type { BenchContext, Measured } from './context.js';

function benchConfig(ctx: BenchContext): RunConfig {
  const runtime = { ...ctx.config.runtime, cache: false };
  if (!ctx.quick) return parseRunConfig({ ...ctx.config, bucket: 'bench-p1', data: relocated(ctx.config.data), runtime });
  return parseRunConfig({ ...ctx.config, bucket: 'bench-p1', data: relocated(ctx.config.data), stages: ['base'], runtime });
}

/** The run's data files and folders, by config field: every S3 URI of `data`. */
const dataUris = (data: RunConfig['data']) => Object.entries(data).filter((entry): entry is [string, string] => typeof entry[1] === 'string' && entry[1].startsWith('s3://'));

/** The demo's data locations, in the benchmark's own bucket. */
function relocated(data: RunConfig['data']): RunConfig['data'] {
  return { ...data, ...Object.fromEntries(dataUris(data).map(([name, uri]) => [name, uri.replace(/^s3:\/\/[^/]+\//, 's3://bench-p1/')])) };
}

/** The shell script that runs the run's stages in order on local files, as the activities would. */
async function plainScript(config: RunConfig, localData: Record<string, string>, dir: string, python: string): Promise<string> {
  const lines = ['set -euo pipefail', `cd ${JSON.stringify(dir)}`];
  const done: StageOutputs = {};
  for (const stage of config.stages) {
    const stageDir = join(dir, stage);
    await mkdir(stageDir, { recursive: true });
    const inputs = inputsOf(stage, { ...config.data, ...localData }, done);
    const task = { runId: 'plain', stage, split: config.data.split, cleaning: config.data.cleaning, config: config[stage] };
    await writeFile(join(stageDir, 'request.json'), JSON.stringify(trainerRequest(task, inputs, join(stageDir, 'out'))));
    const deepspeed = 'deepspeed' in config[stage] ? (config[stage] as RunConfig['pretrain']).deepspeed : undefined;
    const trainer = trainerArgs(stage, join(stageDir, 'request.json'));
    const start = trainerStart(deepspeed, trainer, trainerEnv());
    for (const [name, text] of Object.entries(start.files)) await writeFile(join(stageDir, name), text);
    // As the activity starts it: in the stage's folder, with the start's environment for this stage alone.
    const env = Object.entries(start.env).map(([k, v]) => `${k}=${JSON.stringify(v)}`);
    const command = ['env', ...env, python, ...start.args.map((a) => JSON.stringify(a))].join(' ');
    lines.push(`(cd ${JSON.stringify(stageDir)} && ${command} > ${JSON.stringify(join(stageDir, 'events.jsonl'))})`);
    done[stage] = Object.fromEntries(STAGE_IO[stage].outputs.map((output) => [output, join(stageDir, 'out', output)]));
  }
  return lines.join('\n') + '\n';
}

async function runScript(script: string): Promise<void> {
  const child = spawn('bash', ['-c', script], { env: trainerEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk) => (stderr = (stderr + chunk).slice(-4000)));
  const code = await new Promise((done) => child.on('close', done));
  if (code !== 0) throw new Error(`the plain script failed (${code}):\n${stderr}`);
}

export async function orchestration(ctx: BenchContext): Promise<Measured> {
  const [env, minio] = await Promise.all([ctx.services.temporal(), ctx.services.minio()]);
  const config = benchConfig(ctx);
  await uploadDemoData(minio.client, config.data, ctx.quick ? { statutes: 6, cases: 2, records: 60 } : DEMO_SIZE);
  const localData: Record<string, string> = {};
  for (const [name, uri] of dataUris(config.data)) localData[name] = (await downloadArtifact(minio.client, uri, join(ctx.work, 'p1-data', name))).path;
  const work = join(ctx.work, 'p1-worker');
  const worker = await Worker.create({
    connection: env.nativeConnection,
    taskQueue: 'bench',
    workflowBundle: await ctx.services.workflowBundle(),
    activities: createActivities({ s3: minio.client, settings: { LAWGPT_PYTHON: ctx.python, LAWGPT_WORK_DIR: work }, temporal: env.client, trainerVersion: () => trainerVersion(ctx.python) }),
    ...STAGE_WORKER_OPTIONS,
  });
  const ours: number[] = [];
  const peer: number[] = [];
  await worker.runUntil(async () => {
    for (let i = 0; i < ctx.repeats; i++) {
      let t0 = performance.now();
      await env.client.workflow.execute(lawgptPipeline, { workflowId: `bench-p1-${Date.now()}`, taskQueue: 'bench', args: [config] });
      ours.push((performance.now() - t0) / 1000);

      const dir = join(ctx.work, 'p1-plain');
      await rm(dir, { recursive: true, force: true });
      const script = await plainScript(config, localData, dir, ctx.python);
      t0 = performance.now();
      await runScript(script);
      peer.push((performance.now() - t0) / 1000);
    }
  });
  return { ours, peer, notes: { stages: config.stages.join(',') } };
}
