// The `runStage` activity: one pipeline stage, start to finish, on this worker.
//   download inputs from S3 -> write the trainer request -> run the trainer -> upload outputs to S3
// Progress flows three ways: heartbeats (liveness and cancellation), a throttled signal to the
// workflow (its `status` query and search attributes), and the worker's log.
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ApplicationFailure, Context } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import { NoSuchKey, type S3Client } from '@aws-sdk/client-s3';
import { CONTRACT_VERSION, EXIT_INVALID_INPUT, type TrainerEvent, type TrainerRequest } from '../common/contract.js';
import type { StageProgress, StageResult, StageTask } from '../common/run.js';
import type { Settings } from '../common/settings.js';
import { STAGE_IO } from '../common/stages.js';
import { progressSignal } from '../workflows/definitions.js';
import { deletePrefix, downloadArtifact, s3Uri, uploadDir } from './s3.js';
import { launchTrainer } from './trainer-process.js';

export interface StageDeps {
  s3: S3Client;
  settings: Pick<Settings, 'LAWGPT_PYTHON' | 'LAWGPT_WORK_DIR'>;
  /** Used to send progress to the workflow; without it progress only reaches heartbeats and logs. */
  temporal?: Client;
}

/** Error types a workflow must not retry: the same input would fail the same way. */
export const NON_RETRYABLE_ERRORS = ['InvalidInput'];

export const artifactPrefix = (task: Pick<StageTask, 'bucket' | 'runId' | 'stage'>, output: string) =>
  s3Uri(task.bucket, `runs/${task.runId}/${task.stage}/${output}/`);

export function createStageActivities(deps: StageDeps) {
  async function fetchInputs(task: StageTask, dir: string): Promise<Record<string, string>> {
    const local: Record<string, string> = {};
    for (const [name, uri] of Object.entries(task.inputs)) {
      try {
        local[name] = (await downloadArtifact(deps.s3, uri, join(dir, name), () => Context.current().heartbeat())).path;
      } catch (err) {
        if (err instanceof NoSuchKey || /^nothing under/.test((err as Error).message)) {
          throw ApplicationFailure.nonRetryable(`input '${name}' not found: ${uri}`, 'InvalidInput');
        }
        throw err;
      }
    }
    return local;
  }

  async function runStage(task: StageTask): Promise<StageResult> {
    const ctx = Context.current();
    const work = resolve(deps.settings.LAWGPT_WORK_DIR, task.runId, task.stage, `attempt-${ctx.info.attempt}`);
    await rm(work, { recursive: true, force: true });
    await mkdir(join(work, 'out'), { recursive: true });
    try {
      ctx.log.info(`stage ${task.stage}: fetching inputs`, { inputs: task.inputs });
      const request = {
        contract_version: CONTRACT_VERSION,
        run_id: task.runId,
        stage: task.stage,
        output_dir: join(work, 'out'),
        split: task.split,
        inputs: await fetchInputs(task, join(work, 'inputs')),
        config: task.config,
      } as TrainerRequest;
      const requestPath = join(work, 'request.json');
      await writeFile(requestPath, JSON.stringify(request, null, 2));

      const completed = await runTrainer(task, requestPath, work);
      return await publish(task, work, completed);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }

  async function runTrainer(task: StageTask, requestPath: string, cwd: string) {
    const ctx = Context.current();
    const reporter = progressReporter(task, deps.temporal);
    // The trainer may be silent for minutes (tokenising, saving); heartbeat while it is alive so
    // that a dead worker, not a quiet trainer, is what the heartbeat timeout detects.
    const beat = setInterval(() => ctx.heartbeat(reporter.latest()), 5_000);
    let exit;
    try {
      exit = await launchTrainer({
        python: deps.settings.LAWGPT_PYTHON,
        stage: task.stage,
        requestPath,
        cwd,
        signal: ctx.cancellationSignal,
        onEvent: (event) => onEvent(task, event, reporter),
        onStderr: (line) => ctx.log.debug(`[${task.stage}] ${line}`),
      });
    } finally {
      clearInterval(beat);
    }
    await reporter.flush();
    if (ctx.cancellationSignal.aborted) throw ctx.cancellationSignal.reason;

    const completed = exit.events.find((e) => e.event === 'completed');
    const failed = exit.events.find((e) => e.event === 'failed');
    const outcome = `trainer ${task.stage} exited with ${exit.code ?? exit.signal}`;
    if (exit.protocolErrors.length) {
      throw ApplicationFailure.nonRetryable(
        `${outcome}; it broke the event contract on stdout: ${exit.protocolErrors.slice(0, 3).join(' | ')}`,
        'ContractViolation',
      );
    }
    if (exit.code === EXIT_INVALID_INPUT) {
      throw ApplicationFailure.nonRetryable(`${outcome}: ${failed?.message ?? 'invalid input'}\n${exit.stderrTail}`, 'InvalidInput');
    }
    if (exit.code !== 0 || !completed) {
      throw ApplicationFailure.retryable(`${outcome}: ${failed?.message ?? 'no completed event'}\n--- stderr tail ---\n${exit.stderrTail}`, 'TrainerFailed');
    }
    return completed;
  }

  function onEvent(task: StageTask, event: TrainerEvent, reporter: ReturnType<typeof progressReporter>) {
    const log = Context.current().log;
    if (event.event === 'progress') reporter.update({ stage: task.stage, step: event.step, totalSteps: event.total_steps, loss: event.loss });
    if (event.event === 'log') log[event.level === 'warning' ? 'warn' : 'info'](`[${task.stage}] ${event.message}`);
  }

  async function publish(task: StageTask, work: string, completed: Extract<TrainerEvent, { event: 'completed' }>): Promise<StageResult> {
    const expected = [...STAGE_IO[task.stage].outputs].sort();
    const reported = Object.keys(completed.outputs).sort();
    if (expected.join() !== reported.join()) {
      throw ApplicationFailure.nonRetryable(`trainer ${task.stage} reported outputs [${reported}], the contract says [${expected}]`, 'ContractViolation');
    }
    const outputs: Record<string, string> = {};
    for (const [name, relativePath] of Object.entries(completed.outputs)) {
      const target = artifactPrefix(task, name);
      await deletePrefix(deps.s3, target);
      const stats = await uploadDir(deps.s3, join(work, 'out', relativePath), target, () => Context.current().heartbeat());
      Context.current().log.info(`stage ${task.stage}: uploaded ${name} (${stats.files} files, ${stats.bytes} bytes) to ${target}`);
      outputs[name] = target;
    }
    return { stage: task.stage, outputs, metrics: completed.metrics };
  }

  return { runStage };
}

/** Keeps the latest progress and forwards it to the workflow at most every `progressReportSeconds`. */
function progressReporter(task: StageTask, temporal?: Client) {
  const ctx = Context.current();
  let latest: StageProgress | undefined;
  let sentAt = 0;
  let pending: StageProgress | undefined;

  async function send(progress: StageProgress) {
    sentAt = Date.now();
    pending = undefined;
    const loss = progress.loss === undefined ? '' : ` loss ${progress.loss.toFixed(4)}`;
    ctx.log.info(`[${progress.stage}] step ${progress.step}/${progress.totalSteps}${loss}`);
    const execution = ctx.info.workflowExecution;
    if (!temporal || !execution) return;
    try {
      await temporal.workflow.getHandle(execution.workflowId, execution.runId).signal(progressSignal, progress);
    } catch (err) {
      ctx.log.warn(`could not report progress to the workflow: ${(err as Error).message}`);
    }
  }

  return {
    latest: () => latest,
    update(progress: StageProgress) {
      latest = progress;
      ctx.heartbeat(progress);
      if (Date.now() - sentAt >= task.progressReportSeconds * 1000) void send(progress);
      else pending = progress;
    },
    async flush() {
      if (pending) await send(pending);
    },
  };
}
