// The LaWGPT pipeline as a Temporal workflow. It only decides what runs next and hands S3 URIs
// forward; every stage is the `runStage` activity, which runs trainer-py.
//
//   base -> vocab -> pretrain -> sft -> eval
//
// Deterministic: no I/O, no clocks, no randomness here.
import {
  ActivityCancellationType,
  ActivityFailure,
  allHandlersFinished,
  ApplicationFailure,
  condition,
  continueAsNew,
  isCancellation,
  log,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { RetryState } from '@temporalio/common';
import type { createReportActivities } from '../activities/report.js';
import type { createStageActivities } from '../activities/stage.js';
import { PROGRESS_REPORTS_PER_EXECUTION, RETRY_BACKOFF_SECONDS, type RunConfig } from '../common/config.js';
import { gateFailures } from '../common/gates.js';
import { describeUsage, stageTask, type PipelineResult, type PipelineStatus, type StageResult } from '../common/run.js';
import { STAGES, type StageOutputs, type StageName } from '../common/stages.js';
import { approveUpdate, progressSignal, STAGE_KEY, statusQuery } from './definitions.js';
import { pauseControl } from './pause.js';
import { rolloverControl } from './rollover.js';

/** What a run carries into its next execution when it continues as new. */
export interface CarriedOver {
  finished: Partial<Record<StageName, StageResult>>;
  paused: boolean;
  /** The stage stopped midway to go on here (rollover.ts): it was approved already. */
  resuming?: StageName;
}

/**
 * A long run starts a fresh history between stages when Temporal suggests it, and in the middle
 * of a stage that has reported progress for days (rollover.ts), so it never nears the history
 * limit; `carried` brings the finished stages (and a pause) into the new execution.
 */
export async function lawgptPipeline(config: RunConfig, carried: CarriedOver = { finished: {}, paused: false }): Promise<PipelineResult> {
  // A failed attempt waits runtime.retry_backoff_seconds, doubling (runs started before it carry none).
  const backoff = { initialInterval: `${config.runtime.retry_backoff_seconds ?? RETRY_BACKOFF_SECONDS} seconds`, backoffCoefficient: 2, maximumInterval: '10 minutes' };
  // A stage runs on its own task queue where the config names one (GPU stages on GPU workers).
  const runStageOf = (stage: StageName) =>
    proxyActivities<ReturnType<typeof createStageActivities>>({
      startToCloseTimeout: `${config.runtime.stage_timeout_minutes} minutes`,
      heartbeatTimeout: `${config.runtime.heartbeat_timeout_seconds} seconds`,
      retry: { maximumAttempts: config.runtime.max_attempts, ...backoff, nonRetryableErrorTypes: ['InvalidInput', 'ContractViolation'] },
      // On cancel, wait while the stage stops its trainer and commits a final checkpoint.
      cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
      ...(config.runtime.task_queues?.[stage] && { taskQueue: config.runtime.task_queues[stage] }),
    }).runStage;
  // Looking up the stage cache lists S3 objects: quick, but worth a few retries, with the same
  // backoff (a failed lookup fails the run).
  const { stageCache } = proxyActivities<ReturnType<typeof createStageActivities>>({
    startToCloseTimeout: '10 minutes',
    retry: { maximumAttempts: 5, ...backoff },
  });
  // The report reads what the run left in S3; a run whose report cannot be written still did its work.
  const { writeReport } = proxyActivities<ReturnType<typeof createReportActivities>>({
    startToCloseTimeout: '10 minutes',
    retry: { maximumAttempts: 3 },
  });
  // Runs started before the setting existed carry none in their config.
  const reportsPerExecution = config.runtime.progress_reports_per_execution ?? PROGRESS_REPORTS_PER_EXECUTION;
  const rollover = rolloverControl(reportsPerExecution);
  const status = trackStatus(config, rollover.reported);
  const startAfresh = async (resuming?: StageName): Promise<never> => {
    await condition(allHandlersFinished);
    return continueAsNew<typeof lawgptPipeline>(config, { finished: status.current.results, paused: pause.isPaused(), ...(resuming && { resuming }) });
  };
  /** Writes the run report (runs started before reports existed replay without one) and says where. */
  const report = async (error?: string): Promise<{ report?: string }> => {
    if (!patched('run-report')) return {};
    try {
      const { stages, results } = status.current;
      return { report: await writeReport.executeWithOptions({ summary: 'run report' }, [{ runId: workflowInfo().workflowId, config, stages, results, ...(error && { error }) }]) };
    } catch (err) {
      if (isCancellation(err)) throw err;
      log.warn(`the run report could not be written: ${(err as Error).message}`);
      return {};
    }
  };
  const pause = pauseControl({ onPause: () => status.pause(true), onResume: () => status.pause(false), status: () => status.current }, carried.paused);
  // Older histories' configs predate `artifacts` and `gates`.
  const done: StageOutputs = { ...(config.artifacts ?? {}) };
  for (const result of Object.values(carried.finished)) {
    done[result.stage] = result.outputs;
    status.complete(result);
  }
  if (carried.paused) status.pause(true);
  const approval = approvalGate(status);

  for (const stage of config.stages) {
    if (carried.finished[stage]) continue;
    if (workflowInfo().continueAsNewSuggested || rollover.dueBeforeStage()) return startAfresh();
    status.begin(stage);
    const task = stageTask(workflowInfo().workflowId, config, stage, done);
    let result: StageResult | undefined;
    try {
      const cache = await stageCache(task, config.runtime.cache);
      // Approval is for spending the stage's compute: a cached stage spends none, and one going on
      // in a fresh execution was approved in the first.
      if (!cache.hit && stage === config.runtime.approve_before && carried.resuming !== stage) await approval.wait(stage, config.runtime.approval_timeout_hours);
      const summary = `${stage} on ${Object.values(task.inputs).join(', ') || 'no inputs'}`;
      result = cache.hit ?? (await rollover.run(() => pause.run(() => whileProgressing(stage, status, () => runStageOf(stage).executeWithOptions({ summary }, [task])))));
    } catch (err) {
      if (isCancellation(err)) {
        status.end(stage, 'cancelled');
        throw err;
      }
      status.end(stage, 'failed');
      const cause = err instanceof ActivityFailure && err.cause ? err.cause : err;
      const message = `stage ${stage} failed: ${(cause as Error).message}`;
      await report(message);
      throw ApplicationFailure.create({
        message,
        type: 'StageFailed',
        nonRetryable: true,
        cause: err as Error,
      });
    }
    if (!result) {
      log.info(`stage ${stage} has sent ${reportsPerExecution} progress reports (runtime.progress_reports_per_execution): it goes on from its checkpoint in a fresh execution`);
      return startAfresh(stage);
    }
    // Gates first: a stage whose model misses them must not look completed, nor the run done.
    const failures = gateFailures(stage, result.metrics, config.gates?.[stage]);
    if (failures.length) {
      status.gateFailed(result);
      const message = `gate after ${stage}: ${failures.join('; ')}`;
      await report(message);
      throw ApplicationFailure.create({ message, type: 'GateFailed', nonRetryable: true });
    }
    done[stage] = result.outputs;
    status.complete(result);
  }
  return { ...status.result(), ...(await report()) };
}

/**
 * Runs a stage's activity again, with a fresh budget of `runtime.max_attempts`, whenever its
 * attempts ran out after committing a newer checkpoint than it began with (as the stage's progress
 * reports showed it): the stage fails once a whole budget gets no further, not on the crashes,
 * redeploys and stage timeouts of a stage that trains for weeks, each attempt resuming from the
 * last checkpoint. History recorded before this rule (no `retry-after-progress` marker) replays
 * without it.
 */
async function whileProgressing(stage: StageName, status: ReturnType<typeof trackStatus>, run: () => Promise<StageResult>): Promise<StageResult> {
  for (;;) {
    const before = status.current.checkpoint;
    try {
      return await run();
    } catch (err) {
      const after = status.current.checkpoint;
      const ranOut = err instanceof ActivityFailure && err.retryState === RetryState.MAXIMUM_ATTEMPTS_REACHED;
      if (!ranOut || after === null || (before !== null && after <= before) || !patched('retry-after-progress')) throw err;
      const since = before === null ? 'its start' : `checkpoint-${before}`;
      log.warn(`stage ${stage}: its attempts ran out, having got from ${since} to checkpoint-${after}; it runs again with a fresh budget of runtime.max_attempts`);
    }
  }
}

/**
 * `runtime.approve_before`: the stage waits for the `approve` update (refused while nothing waits)
 * and fails the run when none comes within the timeout.
 */
function approvalGate(status: ReturnType<typeof trackStatus>) {
  let waiting = false;
  let approved = false;
  setHandler(
    approveUpdate,
    () => {
      approved = true;
      return status.current;
    },
    {
      validator: () => {
        if (!waiting) throw new Error('this run is not waiting for approval');
      },
    },
  );
  return {
    async wait(stage: StageName, hours: number) {
      waiting = true;
      status.awaitApproval(stage);
      const given = await condition(() => approved, `${hours} hours`);
      waiting = false;
      if (!given) {
        throw ApplicationFailure.create({ message: `not approved within ${hours} hours (runtime.approval_timeout_hours)`, type: 'ApprovalTimedOut', nonRetryable: true });
      }
      status.begin(stage);
    },
  };
}

/**
 * The run's visible state: the `status` query, the progress signal, the LawgptStage search
 * attribute, and the current details the Temporal UI shows without a query.
 */
function trackStatus(config: RunConfig, onReport: () => void) {
  const status: PipelineStatus = {
    runName: config.name,
    stage: null,
    step: null,
    totalSteps: null,
    loss: null,
    checkpoint: null,
    paused: false,
    stages: Object.fromEntries(STAGES.map((s) => [s, config.stages.includes(s) ? 'pending' : 'skipped'])) as PipelineStatus['stages'],
    results: {},
  };
  const describe = () => {
    const stage = status.stage;
    const now = stage
      ? [`**${stage}** ${status.stages[stage]}`, status.step !== null && `step ${status.step}/${status.totalSteps}`, status.loss !== null && `loss ${status.loss.toFixed(4)}`, status.checkpoint !== null && `checkpoint ${status.checkpoint}`]
      : ['starting'];
    const stages = config.stages.map((s) => `${s} ${status.stages[s]}`).join(' · ');
    setCurrentDetails(`${now.filter(Boolean).join(' · ')}\n\n${stages}\n\nso far ${describeUsage(status.results, 2)}`);
  };
  setHandler(statusQuery, () => status);
  setHandler(progressSignal, (progress) => {
    onReport();
    if (progress.stage !== status.stage) return; // a late report from a finished stage
    status.step = progress.step;
    status.totalSteps = progress.totalSteps;
    status.loss = progress.loss ?? status.loss;
    // A stage's newest committed checkpoint only grows; a report sent before another may arrive after it.
    if (typeof progress.checkpoint === 'number') status.checkpoint = Math.max(progress.checkpoint, status.checkpoint ?? progress.checkpoint);
    describe();
  });
  const show = (value: string) => {
    upsertSearchAttributes([{ key: STAGE_KEY, value }]);
    describe();
  };

  return {
    begin(stage: StageName) {
      Object.assign(status, { stage, step: null, totalSteps: null, loss: null, checkpoint: null });
      status.stages[stage] = status.paused ? 'paused' : 'running';
      show(status.paused ? `${stage}:paused` : stage);
    },
    current: status,
    awaitApproval(stage: StageName) {
      Object.assign(status, { stage, step: null, totalSteps: null, loss: null, checkpoint: null });
      status.stages[stage] = 'awaiting-approval';
      show(`${stage}:awaiting-approval`);
    },
    pause(paused: boolean) {
      status.paused = paused;
      const stage = status.stage;
      if (!stage || !['running', 'paused'].includes(status.stages[stage])) return;
      status.stages[stage] = paused ? 'paused' : 'running';
      show(paused ? `${stage}:paused` : stage);
    },
    end(stage: StageName, state: 'failed' | 'cancelled') {
      status.stages[stage] = state;
      show(`${stage}:${state}`);
    },
    /** The stage ran, and its metrics (kept for the status query) missed a gate. */
    gateFailed(result: StageResult) {
      status.stages[result.stage] = 'gate-failed';
      status.results[result.stage] = result;
      show(`${result.stage}:gate-failed`);
    },
    complete(result: StageResult) {
      status.stages[result.stage] = result.cachedFrom ? 'cached' : 'completed';
      status.results[result.stage] = result;
      if (result.stage === config.stages[config.stages.length - 1]) show('done');
      else describe();
    },
    result(): PipelineResult {
      return { runName: config.name, stages: status.results, evaluation: status.results.eval?.metrics };
    },
  };
}
