// The pipeline workflow on a real local Temporal server, with `runStage` mocked.
import { readFileSync } from 'node:fs';
import { ApplicationFailure, Context } from '@temporalio/activity';
import { WorkflowFailedError, WorkflowUpdateFailedError } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { parseRunConfig, type RunConfig } from '../common/config.js';
import type { RunSnapshot } from '../common/report.js';
import type { StageResult, StageTask } from '../common/run.js';
import { STAGE_IO } from '../common/stages.js';
import { lawgptPipeline } from '../workflows/pipeline.js';
import { createActivities, workerOptions } from '../activities/index.js';
import { STAGE_WORKER_OPTIONS } from '../activities/stage.js';
import { approveUpdate, pauseUpdate, progressSignal, resumeUpdate, STAGE_KEY, statusQuery } from '../workflows/definitions.js';
import { keepHistory } from './helpers/histories.js';
import { inBackground, startTemporal, workflowsPath } from './helpers/temporal.js';

const demo = JSON.parse(readFileSync(new URL('../configs/demo.json', import.meta.url), 'utf8'));
const config = (overrides: object = {}): RunConfig =>
  parseRunConfig({ ...demo, ...overrides, runtime: { max_attempts: 3, retry_backoff_seconds: 1, progress_report_seconds: 1, ...(overrides as { runtime?: object }).runtime } });

/** A stand-in for the real activity: outputs at the URIs the real one would use. */
function fakeStage(task: StageTask): StageResult {
  const outputs = Object.fromEntries(STAGE_IO[task.stage].outputs.map((o) => [o, `s3://${task.bucket}/runs/${task.runId}/${task.stage}/${o}/`]));
  return { stage: task.stage, outputs, metrics: { steps: 1 } };
}

let env: TestWorkflowEnvironment;
let taskQueueCounter = 0;

beforeAll(async () => {
  env = await startTemporal();
});
afterAll(async () => {
  await env?.teardown();
});

const noCache = async () => ({});
const reportAt = (snapshot: RunSnapshot) => `s3://${snapshot.config.bucket}/runs/${snapshot.runId}/report/index.html`;
// A stand-in for writeReport (the real one: tests/e2e.test.ts): says where the page would be.
const fakeReport = async (snapshot: RunSnapshot) => reportAt(snapshot);

async function run(
  runStage: (task: StageTask) => Promise<StageResult>,
  cfg: RunConfig,
  during?: (id: string) => Promise<void>,
  stageCache: (task: StageTask, lookup: boolean) => Promise<{ hit?: StageResult }> = noCache,
  writeReport: (snapshot: RunSnapshot) => Promise<string> = fakeReport,
) {
  const taskQueue = `wf-test-${++taskQueueCounter}`;
  const worker = await Worker.create({ connection: env.nativeConnection, taskQueue, workflowsPath, activities: { runStage, stageCache, writeReport }, ...STAGE_WORKER_OPTIONS });
  const workflowId = `${cfg.name}-${taskQueue}`;
  return worker.runUntil(async () => {
    const handle = await env.client.workflow.start(lawgptPipeline, { workflowId, taskQueue, args: [cfg] });
    await during?.(workflowId);
    const outcome = await handle.result().then(
      (value) => ({ value, error: undefined }),
      (error: unknown) => ({ value: undefined, error }),
    );
    const description = await handle.describe();
    return { ...outcome, handle, description, status: await handle.query(statusQuery) };
  });
}

describe('lawgptPipeline', () => {
  it('runs the stages in order and hands each one the S3 URIs of earlier outputs', async () => {
    const runStage = vi.fn(async (task: StageTask) => fakeStage(task));
    const { value, description, status, handle } = await run(runStage, config());

    const tasks = runStage.mock.calls.map(([task]) => task);
    expect(tasks.map((t) => t.stage)).toEqual(['base', 'vocab', 'pretrain', 'sft', 'eval']);
    const id = handle.workflowId;
    const out = (stage: string, name: string) => `s3://lawgpt/runs/${id}/${stage}/${name}/`;
    expect(tasks[1].inputs).toEqual({ corpus: demo.data.corpus, base_tokenizer: out('base', 'tokenizer') });
    expect(tasks[2].inputs).toEqual({ corpus: demo.data.corpus, tokenizer: out('vocab', 'tokenizer'), base_model: out('base', 'model') });
    expect(tasks[3].inputs).toEqual({ model: out('pretrain', 'model'), dialogue: demo.data.dialogue, exam: demo.data.exam, instructions: demo.data.instructions });
    expect(tasks[4].inputs).toEqual({
      model: out('sft', 'model'),
      corpus: demo.data.corpus,
      exam: demo.data.exam,
      short_answer: demo.data.short_answer,
      base_model: out('base', 'model'),
      pretrained_model: out('pretrain', 'model'),
    });
    expect(tasks[2].config).toEqual(config().pretrain);

    expect(value!.stages.sft!.outputs.adapter).toBe(out('sft', 'adapter'));
    expect(value!.evaluation).toEqual({ steps: 1 });
    expect(Object.values(status.stages)).toEqual(['completed', 'completed', 'completed', 'completed', 'completed']);
    expect(description.typedSearchAttributes.get(STAGE_KEY)).toBe('done');
  });

  it('skips a stage the stage cache already holds, and says so', async () => {
    const runStage = vi.fn(async (task: StageTask) => fakeStage(task));
    const cached = { stage: 'base' as const, outputs: { tokenizer: 's3://lawgpt/runs/old/base/tokenizer/', model: 's3://lawgpt/runs/old/base/model/' }, metrics: {}, cachedFrom: 'old' };
    const stageCache = vi.fn(async (task: StageTask, lookup: boolean) => ({ hit: task.stage === 'base' && lookup ? cached : undefined }));
    const { value, status } = await run(runStage, config({ stages: ['base', 'vocab'] }), undefined, stageCache);

    expect(runStage.mock.calls.map(([t]) => t.stage)).toEqual(['vocab']);
    expect(runStage.mock.calls[0][0].inputs.base_tokenizer).toBe('s3://lawgpt/runs/old/base/tokenizer/');
    expect(value!.stages.base!.cachedFrom).toBe('old');
    expect(status.stages).toMatchObject({ base: 'cached', vocab: 'completed' });

    runStage.mockClear();
    await run(runStage, config({ stages: ['base', 'vocab'], runtime: { cache: false } }), undefined, stageCache);
    expect(runStage.mock.calls.map(([t]) => t.stage)).toEqual(['base', 'vocab']);
  });

  it('stops after the configured leading stages', async () => {
    const runStage = vi.fn(async (task: StageTask) => fakeStage(task));
    const { value } = await run(runStage, config({ stages: ['base', 'vocab'] }));
    expect(runStage.mock.calls.map(([t]) => t.stage)).toEqual(['base', 'vocab']);
    expect(Object.keys(value!.stages)).toEqual(['base', 'vocab']);
  });

  it('starts at a later stage from given artifacts (BenTsao: instruction tuning only)', async () => {
    const runStage = vi.fn(async (task: StageTask) => fakeStage(task));
    const given = 's3://models/llama-7b/';
    const { value, status } = await run(runStage, config({ stages: ['sft', 'eval'], artifacts: { pretrain: { model: given } } }));

    const tasks = runStage.mock.calls.map(([task]) => task);
    expect(tasks.map((t) => t.stage)).toEqual(['sft', 'eval']);
    expect(tasks[0].inputs.model).toBe(given);
    // eval compares with the given model too; its optional base model is neither run nor given,
    // so it is left out, not passed as undefined.
    expect(Object.keys(tasks[1].inputs).sort()).toEqual(['corpus', 'exam', 'model', 'pretrained_model', 'short_answer']);
    expect(tasks[1].inputs.pretrained_model).toBe(given);
    expect(Object.keys(value!.stages)).toEqual(['sft', 'eval']);
    expect(status.stages).toMatchObject({ base: 'skipped', pretrain: 'skipped', sft: 'completed', eval: 'completed' });
  });

  it('fails the run at a gate its stage misses, before the next stage, and shows which gate', async () => {
    const runStage = vi.fn(async (task: StageTask) => ({ ...fakeStage(task), metrics: { heldout_perplexity: 80 } }));
    const { error, status, description } = await run(runStage, config({ gates: { pretrain: { heldout_perplexity: { max: 50 } } } }));

    expect(error).toBeInstanceOf(WorkflowFailedError);
    expect(((error as WorkflowFailedError).cause as Error).message).toBe("gate after pretrain: pretrain.heldout_perplexity is 80, above the gate's max 50");
    expect(runStage.mock.calls.map(([t]) => t.stage)).toEqual(['base', 'vocab', 'pretrain']);
    expect(status.stages).toMatchObject({ vocab: 'completed', pretrain: 'gate-failed', sft: 'pending' });
    expect(status.results.pretrain?.metrics).toEqual({ heldout_perplexity: 80 });
    expect(description.typedSearchAttributes.get(STAGE_KEY)).toBe('pretrain:gate-failed');
  });

  it('never shows a run done whose last stage missed its gate', async () => {
    const runStage = vi.fn(async (task: StageTask) => ({ ...fakeStage(task), metrics: { exam_accuracy: 0.2 } }));
    const { error, status, description, handle } = await run(runStage, config({ gates: { eval: { exam_accuracy: { min: 0.3 } } } }));

    expect(((error as WorkflowFailedError).cause as Error).message).toBe("gate after eval: eval.exam_accuracy is 0.2, below the gate's min 0.3");
    expect(status.stages.eval).toBe('gate-failed');
    expect(description.typedSearchAttributes.get(STAGE_KEY)).toBe('eval:gate-failed');
    await keepHistory(handle, 'gate-failed');
  });

  it('stops at a failing stage with an error naming it, and runs nothing after it', async () => {
    const runStage = vi.fn(async (task: StageTask) => {
      if (task.stage === 'pretrain') throw ApplicationFailure.nonRetryable('corpus yields no full block', 'InvalidInput');
      return fakeStage(task);
    });
    const { error, status, description } = await run(runStage, config());

    expect(error).toBeInstanceOf(WorkflowFailedError);
    expect(((error as WorkflowFailedError).cause as Error).message).toBe('stage pretrain failed: corpus yields no full block');
    expect(runStage.mock.calls.map(([t]) => t.stage)).toEqual(['base', 'vocab', 'pretrain']);
    expect(status.stages).toMatchObject({ pretrain: 'failed', sft: 'pending', eval: 'pending' });
    expect(description.typedSearchAttributes.get(STAGE_KEY)).toBe('pretrain:failed');
  });

  it('writes the run report when the run ends, with what every stage did, and says where', async () => {
    const writeReport = vi.fn(fakeReport);
    const { value, handle } = await run(async (task) => fakeStage(task), config({ stages: ['base', 'vocab'] }), undefined, noCache, writeReport);

    expect(writeReport).toHaveBeenCalledTimes(1);
    const snapshot = writeReport.mock.calls[0][0];
    expect(snapshot).toMatchObject({ runId: handle.workflowId, config: { name: 'demo' }, stages: { base: 'completed', vocab: 'completed', pretrain: 'skipped' } });
    expect(Object.keys(snapshot.results)).toEqual(['base', 'vocab']);
    expect(snapshot.error).toBeUndefined();
    expect(value!.report).toBe(reportAt(snapshot));
  });

  it('writes the report of a failed run too, with why it failed', async () => {
    const writeReport = vi.fn(fakeReport);
    const runStage = async (task: StageTask) => {
      if (task.stage === 'vocab') throw ApplicationFailure.nonRetryable('no corpus', 'InvalidInput');
      return fakeStage(task);
    };
    const { error } = await run(runStage, config({ stages: ['base', 'vocab'] }), undefined, noCache, writeReport);

    expect(error).toBeInstanceOf(WorkflowFailedError);
    expect(writeReport.mock.calls[0][0]).toMatchObject({ error: 'stage vocab failed: no corpus', stages: { base: 'completed', vocab: 'failed' } });
  });

  it('completes a run whose report cannot be written, without a report', async () => {
    const writeReport = vi.fn(async () => {
      throw ApplicationFailure.nonRetryable('S3 is gone');
    });
    const { value, error } = await run(async (task) => fakeStage(task), config({ stages: ['base'] }), undefined, noCache, writeReport);

    expect(error).toBeUndefined();
    expect(writeReport).toHaveBeenCalledTimes(1);
    expect(value!.report).toBeUndefined();
    expect(Object.keys(value!.stages)).toEqual(['base']);
  });

  it('runs a stage on the task queue the config names, on the trainer worker polling it, and the rest on the orchestrator', async () => {
    const taskQueue = `wf-test-${++taskQueueCounter}`;
    const gpuQueue = `${taskQueue}-gpu`;
    const ranOn: Record<string, string> = {};
    const runStage = async (task: StageTask) => {
      ranOn[task.stage] = Context.current().info.taskQueue;
      return fakeStage(task);
    };
    const activities = { runStage, stageCache: noCache, writeReport: fakeReport } as unknown as ReturnType<typeof createActivities>;
    const orchestrator = await Worker.create({ connection: env.nativeConnection, ...workerOptions({ LAWGPT_TASK_QUEUE: taskQueue, LAWGPT_WORKER_ROLE: 'orchestrator', LAWGPT_WORKER_SLOTS: 1 }, activities) });
    const trainerOptions = workerOptions({ LAWGPT_TASK_QUEUE: gpuQueue, LAWGPT_WORKER_ROLE: 'trainer', LAWGPT_WORKER_SLOTS: 2 }, activities);
    expect(Object.keys(trainerOptions.activities!)).toEqual(['runStage']);
    expect(trainerOptions.workflowsPath).toBeUndefined();
    const trainer = await Worker.create({ connection: env.nativeConnection, ...trainerOptions });
    const stopTrainer = inBackground(trainer);

    const cfg = config({ stages: ['base', 'vocab', 'pretrain', 'sft'], runtime: { task_queues: { pretrain: gpuQueue, sft: gpuQueue } } });
    await orchestrator.runUntil(env.client.workflow.execute(lawgptPipeline, { workflowId: `queues-${taskQueue}`, taskQueue, args: [cfg] }));
    await stopTrainer();

    expect(ranOn).toEqual({ base: taskQueue, vocab: taskQueue, pretrain: gpuQueue, sft: gpuQueue });
  });

  it('retries a stage that fails for a transient reason, up to max_attempts', async () => {
    let calls = 0;
    const runStage = vi.fn(async (task: StageTask) => {
      if (task.stage === 'vocab' && ++calls < 3) throw ApplicationFailure.retryable('worker lost the disk', 'TrainerFailed');
      return fakeStage(task);
    });
    const { value } = await run(runStage, config({ stages: ['base', 'vocab'] }));
    expect(calls).toBe(3);
    expect(value!.stages.vocab).toBeDefined();

    calls = 0;
    const { error } = await run(runStage, config({ stages: ['base', 'vocab'], runtime: { max_attempts: 2 } }));
    expect(calls).toBe(2);
    expect(((error as WorkflowFailedError).cause as Error).message).toMatch(/^stage vocab failed: worker lost the disk/);
  });

  it('waits runtime.retry_backoff_seconds before retrying a failed attempt, twice that before the next', async () => {
    const startedAt: number[] = [];
    const runStage = vi.fn(async (task: StageTask) => {
      if (task.stage !== 'vocab') return fakeStage(task);
      startedAt.push(Date.now());
      if (startedAt.length < 3) throw ApplicationFailure.retryable('S3 is away', 'TrainerFailed');
      return fakeStage(task);
    });
    const { value } = await run(runStage, config({ stages: ['base', 'vocab'], runtime: { retry_backoff_seconds: 2 } }));
    expect(value!.stages.vocab).toBeDefined();
    const waits = startedAt.slice(1).map((at, i) => (at - startedAt[i]) / 1000);
    expect(waits[0]).toBeGreaterThanOrEqual(2);
    expect(waits[1]).toBeGreaterThanOrEqual(4);
  });

  it('gives a stage a fresh budget of attempts while its attempts commit newer checkpoints, and fails it once they do not', async () => {
    // Each attempt commits a checkpoint (as its progress report shows), then is lost to a redeploy.
    const lost = (checkpointOf: (call: number) => number, succeedsAt: number) => {
      let calls = 0;
      const runStage = vi.fn(async (task: StageTask) => {
        if (task.stage !== 'vocab') return fakeStage(task);
        if (++calls === succeedsAt) return fakeStage(task);
        const { workflowId, runId } = Context.current().info.workflowExecution!;
        const checkpoint = checkpointOf(calls);
        await env.client.workflow.getHandle(workflowId, runId).signal(progressSignal, { stage: 'vocab', step: checkpoint + 1, totalSteps: 100, checkpoint });
        throw ApplicationFailure.retryable('the worker was stopped', 'WorkerShutdown');
      });
      return { runStage, calls: () => calls };
    };
    const twoAttempts = config({ stages: ['base', 'vocab'], runtime: { max_attempts: 2 } });
    // Four attempts lost, each after a newer checkpoint: two budgets of two, then a third.
    const progressing = lost((call) => call * 10, 5);
    const { value } = await run(progressing.runStage, twoAttempts);
    expect(progressing.calls()).toBe(5);
    expect(value!.stages.vocab).toBeDefined();
    // The second budget commits nothing newer than the first: the stage fails after it.
    const stuck = lost(() => 10, 0);
    const { error } = await run(stuck.runStage, twoAttempts);
    expect(stuck.calls()).toBe(4);
    expect(((error as WorkflowFailedError).cause as Error).message).toMatch(/^stage vocab failed: the worker was stopped/);
  });

  it('pauses a running stage until resumed, then runs it again', async () => {
    let stopped = 0;
    const runStage = vi.fn(async (task: StageTask) => {
      if (task.stage === 'pretrain' && runStage.mock.calls.filter(([t]) => t.stage === 'pretrain').length === 1) {
        // A trainer that runs until told to stop, as the real activity does on cancel.
        const ctx = Context.current();
        try {
          for (;;) {
            ctx.heartbeat();
            await ctx.sleep(100);
          }
        } finally {
          stopped++;
        }
      }
      return fakeStage(task);
    });
    const seen: Record<string, unknown> = {};
    const { value } = await run(runStage, config({ stages: ['base', 'vocab', 'pretrain', 'sft'] }), async (id) => {
      const handle = env.client.workflow.getHandle(id);
      await expect(handle.executeUpdate(resumeUpdate)).rejects.toThrow(WorkflowUpdateFailedError);
      await vi.waitFor(async () => expect((await handle.query(statusQuery)).stages.pretrain).toBe('running'), { timeout: 20_000 });
      // The stage shows as running while its cache is looked up; pause once the trainer itself runs
      // (a pause before that holds the stage back without having anything to stop).
      await vi.waitFor(() => expect(runStage.mock.calls.some(([t]) => t.stage === 'pretrain')).toBe(true), { timeout: 20_000 });
      seen.paused = await handle.executeUpdate(pauseUpdate);
      seen.stoppedWhenPauseReturned = stopped;
      seen.attribute = (await handle.describe()).typedSearchAttributes.get(STAGE_KEY);
      await expect(handle.executeUpdate(pauseUpdate)).rejects.toThrow(WorkflowUpdateFailedError);
      seen.resumed = await handle.executeUpdate(resumeUpdate);
    });
    expect(seen.paused).toMatchObject({ paused: true, stage: 'pretrain', stages: { pretrain: 'paused' } });
    expect(seen.stoppedWhenPauseReturned).toBe(1);
    expect(seen.attribute).toBe('pretrain:paused');
    expect(seen.resumed).toMatchObject({ paused: false, stages: { pretrain: 'running' } });
    expect(runStage.mock.calls.map(([t]) => t.stage)).toEqual(['base', 'vocab', 'pretrain', 'pretrain', 'sft']);
    expect(Object.keys(value!.stages)).toEqual(['base', 'vocab', 'pretrain', 'sft']);
  });

  it('shows the running stage, step and loss through the status query', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const runStage = vi.fn(async (task: StageTask) => {
      if (task.stage === 'pretrain') await gate;
      return fakeStage(task);
    });
    const seen: unknown[] = [];
    await run(runStage, config({ stages: ['base', 'vocab', 'pretrain'] }), async (id) => {
      const handle = env.client.workflow.getHandle(id);
      await vi.waitFor(async () => expect((await handle.query(statusQuery)).stage).toBe('pretrain'), { timeout: 20_000 });
      await handle.signal(progressSignal, { stage: 'pretrain', step: 7, totalSteps: 30, loss: 4.25 });
      await handle.signal(progressSignal, { stage: 'vocab', step: 3, totalSteps: 3 }); // stale: ignored
      seen.push(await handle.query(statusQuery));
      seen.push((await handle.describe()).typedSearchAttributes.get(STAGE_KEY));
      seen.push(await handle.query<{ currentDetails: string }>('__temporal_workflow_metadata'));
      release();
    });
    expect(seen[0]).toMatchObject({ stage: 'pretrain', step: 7, totalSteps: 30, loss: 4.25, stages: { vocab: 'completed', pretrain: 'running' } });
    expect(seen[1]).toBe('pretrain');
    // What the Temporal UI shows as the run's current details, without a query typed.
    expect(seen[2]).toMatchObject({ currentDetails: '**pretrain** running · step 7/30 · loss 4.2500\n\nbase completed · vocab completed · pretrain running\n\nso far 0.00 GPU-hours, 0.00 CPU-hours, 0 tokens trained' });
  });

  it('waits for approval before the configured stage, refuses approval when nothing waits, and runs once approved', async () => {
    const runStage = vi.fn(async (task: StageTask) => fakeStage(task));
    const seen: Record<string, unknown> = {};
    const { value, status } = await run(runStage, config({ stages: ['base', 'vocab', 'pretrain'], runtime: { approve_before: 'pretrain' } }), async (id) => {
      const handle = env.client.workflow.getHandle(id);
      await vi.waitFor(async () => expect((await handle.query(statusQuery)).stages.pretrain).toBe('awaiting-approval'), { timeout: 20_000 });
      seen.attribute = (await handle.describe()).typedSearchAttributes.get(STAGE_KEY);
      seen.stagesRun = runStage.mock.calls.map(([t]) => t.stage);
      seen.approved = await handle.executeUpdate(approveUpdate);
      await expect(handle.executeUpdate(approveUpdate)).rejects.toThrow(WorkflowUpdateFailedError);
    });
    expect(seen.attribute).toBe('pretrain:awaiting-approval');
    expect(seen.stagesRun).toEqual(['base', 'vocab']);
    expect(seen.approved).toMatchObject({ stages: { pretrain: 'awaiting-approval' } });
    expect(Object.keys(value!.stages)).toEqual(['base', 'vocab', 'pretrain']);
    expect(status.stages.pretrain).toBe('completed');
  });

  it('fails the run cleanly when no approval comes in time', async () => {
    const runStage = vi.fn(async (task: StageTask) => fakeStage(task));
    const { error, status, description } = await run(runStage, config({ stages: ['base', 'vocab'], runtime: { approve_before: 'vocab', approval_timeout_hours: 0.0005 } }));
    expect(((error as WorkflowFailedError).cause as Error).message).toBe('stage vocab failed: not approved within 0.0005 hours (runtime.approval_timeout_hours)');
    expect(runStage.mock.calls.map(([t]) => t.stage)).toEqual(['base']);
    expect(status.stages.vocab).toBe('failed');
    expect(description.typedSearchAttributes.get(STAGE_KEY)).toBe('vocab:failed');
  });
});

describe('lawgptPipeline on a server that asks for continue-as-new early', () => {
  let small: TestWorkflowEnvironment;
  beforeAll(async () => {
    small = await startTemporal(['--dynamic-config-value', 'limit.historyCount.suggestContinueAsNew=10']);
  });
  afterAll(async () => {
    await small?.teardown();
  });

  it('starts a fresh history between stages and carries the finished stages over', async () => {
    const runStage = vi.fn(async (task: StageTask) => fakeStage(task));
    const worker = await Worker.create({ connection: small.nativeConnection, taskQueue: 'can', workflowsPath, activities: { runStage, stageCache: noCache, writeReport: fakeReport } });
    const result = await worker.runUntil(small.client.workflow.execute(lawgptPipeline, { workflowId: 'can', taskQueue: 'can', args: [config()] }));

    expect(runStage.mock.calls.map(([t]) => t.stage)).toEqual(['base', 'vocab', 'pretrain', 'sft', 'eval']);
    expect(runStage.mock.calls[4][0].inputs.model).toBe('s3://lawgpt/runs/can/sft/model/');
    expect(Object.keys(result.stages)).toEqual(['base', 'vocab', 'pretrain', 'sft', 'eval']);
    const runs = [];
    for await (const execution of small.client.workflow.list({ query: "WorkflowId = 'can'" })) runs.push(execution.status.name);
    expect(runs.length).toBeGreaterThan(1);
    expect(runs.filter((s) => s === 'CONTINUED_AS_NEW')).toHaveLength(runs.length - 1);
  });
});

describe('lawgptPipeline on a server that refuses signals early', () => {
  let strict: TestWorkflowEnvironment;
  beforeAll(async () => {
    // As history.maximumSignalsPerExecution's 10,000 is to a stage reporting every minute for a week.
    strict = await startTemporal(['--dynamic-config-value', 'history.maximumSignalsPerExecution=30']);
  });
  afterAll(async () => {
    await strict?.teardown();
  });

  it('goes on with a stage that has sent its reports in a fresh execution, none refused, without asking approval again', async () => {
    const refused: string[] = [];
    const executions: string[] = [];
    const runStage = vi.fn(async (task: StageTask) => {
      if (task.stage !== 'pretrain') return fakeStage(task);
      const ctx = Context.current();
      const { workflowId, runId } = ctx.info.workflowExecution!;
      executions.push(runId);
      const handle = strict.client.workflow.getHandle(workflowId, runId);
      // The first runs, reporting, until stopped (a cancel thrown by the sleep); the second finishes.
      for (let step = 1; executions.length === 1 || step <= 3; step++) {
        ctx.heartbeat();
        await handle.signal(progressSignal, { stage: 'pretrain', step, totalSteps: 1000, checkpoint: step }).catch((err: Error) => refused.push(err.message));
        await ctx.sleep(400);
      }
      return fakeStage(task);
    });
    const cfg = config({ stages: ['base', 'vocab', 'pretrain', 'sft'], runtime: { progress_reports_per_execution: 10, approve_before: 'pretrain', approval_timeout_hours: 0.005 } });
    const worker = await Worker.create({ connection: strict.nativeConnection, taskQueue: 'rollover', workflowsPath, activities: { runStage, stageCache: noCache, writeReport: fakeReport }, ...STAGE_WORKER_OPTIONS });
    const result = await worker.runUntil(async () => {
      const handle = await strict.client.workflow.start(lawgptPipeline, { workflowId: 'rollover', taskQueue: 'rollover', args: [cfg] });
      await vi.waitFor(async () => expect((await handle.query(statusQuery)).stages.pretrain).toBe('awaiting-approval'), { timeout: 20_000 });
      await handle.executeUpdate(approveUpdate);
      return handle.result();
    });

    expect(refused).toEqual([]);
    expect(runStage.mock.calls.map(([t]) => t.stage)).toEqual(['base', 'vocab', 'pretrain', 'pretrain', 'sft']);
    expect(new Set(executions).size).toBe(2);
    expect(Object.keys(result.stages)).toEqual(['base', 'vocab', 'pretrain', 'sft']);
    const runs = [];
    for await (const execution of strict.client.workflow.list({ query: "WorkflowId = 'rollover'" })) runs.push(execution.status.name);
    expect(runs.sort()).toEqual(['COMPLETED', 'CONTINUED_AS_NEW']);
    await keepHistory(strict.client.workflow.getHandle('rollover', executions[0]), 'progress-rollover');
  }, 120_000);
});
