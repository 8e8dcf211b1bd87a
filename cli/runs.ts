// The CLI's commands on runs that exist: list, status, follow, and the controls (cancel, pause,
// resume, approve). Expected failures are CliErrors: one line and an exit code, never a stack.
import { ServiceError, WorkflowFailedError, WorkflowNotFoundError, WorkflowUpdateFailedError, type Client, type WorkflowExecutionDescription, type WorkflowHandle } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { sequencesPerStep, type RunConfig } from '../common/config.js';
import { describeUsage, WORKFLOW_TYPE, type PipelineResult, type PipelineStatus } from '../common/run.js';
import type { Settings } from '../common/settings.js';
import { approveUpdate, CORPUS_KEY, pauseUpdate, resumeUpdate, RUN_NAME_KEY, STAGE_KEY, statusQuery, TRIGGER_KEY } from '../workflows/definitions.js';

export const EXIT = { ok: 0, runFailed: 1, invalidInput: 2, notFound: 3 } as const;

export class CliError extends Error {
  constructor(
    message: string,
    readonly code: number,
  ) {
    super(message);
  }
}

export const uiLink = (settings: Settings, workflowId: string, runId: string) =>
  `${settings.TEMPORAL_UI_URL}/namespaces/${settings.TEMPORAL_NAMESPACE}/workflows/${encodeURIComponent(workflowId)}/${runId}/history`;

/** A handle on a run that exists, with its description; a missing one is exit code 3. */
export async function existing(client: Client, id: string): Promise<{ handle: WorkflowHandle; description: WorkflowExecutionDescription }> {
  const handle = client.workflow.getHandle(id);
  let description: WorkflowExecutionDescription;
  try {
    description = await handle.describe();
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) throw new CliError(`run ${id} not found`, EXIT.notFound);
    throw err;
  }
  if (description.type !== WORKFLOW_TYPE) throw new CliError(`${id} is a ${description.type} workflow, not a pipeline run`, EXIT.invalidInput);
  return { handle, description };
}

// temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW: the pollers that answer queries and
// updates (@temporalio/proto, which names it, is not a dependency of ours).
const WORKFLOW_TASK_QUEUE = 1;

/**
 * Whether a worker polls `taskQueue`: a run's queries and updates are answered by one. The server
 * lists a worker for a few minutes after its last poll, so one just stopped still counts; where
 * the server cannot say, the answer is yes, and the command waits as it would have.
 */
export async function workerPolls(client: Client, taskQueue: string): Promise<boolean> {
  try {
    const { pollers } = await client.workflowService.describeTaskQueue({ namespace: client.options.namespace, taskQueue: { name: taskQueue }, taskQueueType: WORKFLOW_TASK_QUEUE });
    return Boolean(pollers?.length);
  } catch {
    return true;
  }
}

/** Without a worker an update would wait for one forever and a query fail after a while: say why at once. */
export async function needWorker(client: Client, id: string, description: WorkflowExecutionDescription): Promise<void> {
  if (!(await workerPolls(client, description.taskQueue))) {
    throw new CliError(`run ${id} is running, but no worker polls its task queue '${description.taskQueue}' to answer: start one (npm run worker)`, EXIT.notFound);
  }
}

const costLine = (results: PipelineStatus['results']) => describeUsage(results, 3);

const STATUSES = { running: 'Running', completed: 'Completed', failed: 'Failed', cancelled: 'Canceled' } as const;
export type ListStatus = keyof typeof STATUSES;

export async function listRuns(client: Client, options: { status?: ListStatus; corpus?: string; limit: number }): Promise<string[]> {
  const clauses = [`WorkflowType = '${WORKFLOW_TYPE}'`];
  if (options.status) clauses.push(`ExecutionStatus = '${STATUSES[options.status]}'`);
  if (options.corpus) clauses.push(`${CORPUS_KEY.name} = '${options.corpus.replace(/'/g, "\\'")}'`);
  const lines: string[] = [];
  for await (const run of client.workflow.list({ query: clauses.join(' AND ') })) {
    const a = run.typedSearchAttributes;
    lines.push([run.workflowId, run.status.name.toLowerCase(), a.get(STAGE_KEY) ?? '', a.get(RUN_NAME_KEY) ?? '', a.get(TRIGGER_KEY) ?? '', a.get(CORPUS_KEY) ?? '', run.startTime.toISOString()].join('\t'));
    if (lines.length >= options.limit) break;
  }
  return lines;
}

/**
 * A run's stages as the status shows them: a running run answers its query; a closed one is read
 * from how it ended (no worker needed), its result's stages or its error.
 */
export async function stagesOf(handle: WorkflowHandle, state: string): Promise<{ stages: Partial<PipelineStatus['stages']>; results: PipelineStatus['results']; running?: PipelineStatus; error?: string }> {
  if (state === 'running') {
    const running = await handle.query(statusQuery);
    return { stages: running.stages, results: running.results, running };
  }
  try {
    const result = (await handle.result()) as PipelineResult;
    return { stages: Object.fromEntries(Object.keys(result.stages).map((s) => [s, 'completed'])), results: result.stages };
  } catch (err) {
    return { stages: {}, results: {}, error: err instanceof WorkflowFailedError && err.cause ? err.cause.message : (err as Error).message };
  }
}

export function describeProgress(status: PipelineStatus): string {
  if (!status.stage) return 'starting';
  const state = status.stages[status.stage];
  if (state !== 'running' || status.step === null) return `${status.stage}: ${state}`;
  const loss = status.loss === null ? '' : `  loss ${status.loss.toFixed(4)}`;
  return `${status.stage}: step ${status.step}/${status.totalSteps}${loss}`;
}

export async function runStatus(client: Client, settings: Settings, id: string): Promise<string> {
  const { handle, description } = await existing(client, id);
  const state = description.status.name.toLowerCase();
  if (state === 'running') await needWorker(client, id, description);
  const { stages, results, running, error } = await stagesOf(handle, state);
  const lines = [`run ${id}: ${state}`, `  Temporal UI: ${uiLink(settings, id, description.runId)}`];
  if (error) lines.push(`  error: ${error}`);
  for (const [stage, stageState] of Object.entries(stages)) {
    const result = results[stage as keyof PipelineStatus['results']];
    let detail = '';
    if (running?.stage === stage && stageState === 'running' && running.step !== null) {
      detail = `step ${running.step}/${running.totalSteps}${running.loss === null ? '' : `, loss ${running.loss.toFixed(4)}`}${running.checkpoint === null ? '' : `, checkpoint-${running.checkpoint} committed`}`;
    }
    const usage = result?.usage;
    const cost = usage ? `${usage.deviceHours.toFixed(3)} ${usage.device}-hours (${usage.processes} × ${Math.round(usage.wallSeconds)} s)${usage.tokens ? `, ${usage.tokens} tokens` : ''}` : '';
    lines.push(`  ${stage.padEnd(9)}${(result?.cachedFrom ? 'cached' : stageState).padEnd(18)}${detail || cost}`);
    for (const [name, uri] of Object.entries(result?.outputs ?? {})) lines.push(`             ${name}: ${uri}`);
  }
  if (!error) lines.push(`  cost${state === 'running' ? ' so far' : ''}: ${costLine(results)}`);
  return lines.join('\n');
}

/** The run's config, from the first event of its current execution. */
export async function configOf(client: Client, handle: WorkflowHandle): Promise<RunConfig> {
  const history = await client.workflowService.getWorkflowExecutionHistory({ namespace: client.options.namespace, execution: { workflowId: handle.workflowId }, maximumPageSize: 1 });
  const payload = history.history!.events![0].workflowExecutionStartedEventAttributes!.input!.payloads![0];
  return defaultPayloadConverter.fromPayload(payload);
}

const tokensPerStep = (config: RunConfig, stage: string) => {
  if (stage !== 'pretrain' && stage !== 'sft') return 0;
  const section = config[stage];
  return sequencesPerStep(section) * (stage === 'pretrain' ? config.pretrain.block_size : config.sft.cutoff_len);
};

/** A stage's steps per second, as follow measures it between the step changes it sees. */
export interface Pace {
  stage: string;
  step: number;
  at: number;
  perSecond?: number;
  /** A step change of this stage has been seen, so `at` is when a step ended. */
  stepped: boolean;
}

/**
 * The pace after seeing `stage` at `step` at `now` (ms). The first change seen in a stage only
 * marks a step's end: the time before it holds the stage's start-up (a model loading, a first
 * compile), and a pace taken from it made eval's ETA read 1,056 s where 2 s were left.
 */
export function nextPace(pace: Pace | undefined, stage: string, step: number, now: number): Pace {
  if (pace?.stage !== stage) return { stage, step, at: now, stepped: false };
  if (step <= pace.step) return pace;
  return { stage, step, at: now, stepped: true, perSecond: pace.stepped ? (step - pace.step) / ((now - pace.at) / 1000) : undefined };
}

/**
 * Follows a run to its end: on a terminal one live line (stage, step/total, loss, tokens/s, ETA),
 * otherwise a plain line per change. Resolves with the result; a failed run is exit code 1.
 */
export async function followRun(client: Client, handle: WorkflowHandle, out: NodeJS.WriteStream = process.stdout): Promise<PipelineResult> {
  const config = await configOf(client, handle).catch(() => undefined);
  const { status, taskQueue } = await handle.describe();
  if (status.name === 'RUNNING' && !(await workerPolls(client, taskQueue))) out.write(`  waiting for a worker: none polls task queue '${taskQueue}' yet (npm run worker starts one)\n`);
  let finished = false;
  const result = handle.result().finally(() => (finished = true));
  // Failure is reported below, once the loop is done; until then it is not unhandled.
  result.catch(() => undefined);
  let last = '';
  let rate: Pace | undefined;
  while (!finished) {
    const status = await handle.query(statusQuery).catch(() => undefined);
    if (status) {
      let line = describeProgress(status);
      if (status.stage && status.step !== null) {
        const now = Date.now();
        rate = nextPace(rate, status.stage, status.step, now);
        if (rate.perSecond && status.totalSteps) {
          const tokens = config ? tokensPerStep(config, status.stage) * rate.perSecond : 0;
          line += `${tokens ? `  ${Math.round(tokens)} tokens/s` : ''}  ETA ${Math.round((status.totalSteps - status.step) / rate.perSecond)} s`;
        }
      }
      if (out.isTTY) out.write(`\r\x1b[2K  ${line}`);
      else if (line !== last) out.write(`  ${line}\n`);
      last = line;
    }
    await Promise.race([result.catch(() => undefined), new Promise((r) => setTimeout(r, 1000))]);
  }
  if (out.isTTY) out.write('\n');
  try {
    return await result;
  } catch (err) {
    const cause = err instanceof WorkflowFailedError && err.cause ? err.cause.message : (err as Error).message;
    throw new CliError(`run ${handle.workflowId} failed: ${cause}`, EXIT.runFailed);
  }
}

export async function follow(client: Client, id: string): Promise<PipelineResult> {
  return followRun(client, (await existing(client, id)).handle);
}

export function formatResult(result: PipelineResult): string {
  const lines = ['artifacts:'];
  for (const [stage, stageResult] of Object.entries(result.stages)) {
    const cached = stageResult.cachedFrom ? `  (cached: made by run ${stageResult.cachedFrom})` : '';
    for (const [name, uri] of Object.entries(stageResult.outputs)) lines.push(`  ${stage}.${name}: ${uri}${cached}`);
  }
  if (result.evaluation) lines.push(`evaluation: ${JSON.stringify(result.evaluation)}`);
  lines.push(`cost: ${costLine(result.stages)}`);
  if (result.report) lines.push(`report: ${result.report}`);
  return lines.join('\n');
}

const CONTROLS = { pause: pauseUpdate, resume: resumeUpdate, approve: approveUpdate } as const;

/** cancel, pause, resume or approve; a control the run refuses (nothing to approve, say, or a run that has ended) is invalid input. */
export async function control(client: Client, id: string, action: 'cancel' | keyof typeof CONTROLS): Promise<string> {
  const { handle, description } = await existing(client, id);
  const state = description.status.name.toLowerCase();
  if (state !== 'running') throw new CliError(`run ${id} has ended (${state}): nothing to ${action}`, EXIT.invalidInput);
  if (action === 'cancel') {
    await handle.cancel();
    const waiting = (await workerPolls(client, description.taskQueue)) ? '' : ` (no worker polls its task queue '${description.taskQueue}' yet: it stops once one does)`;
    return `cancel requested for run ${id}: the running stage commits a checkpoint and stops${waiting}`;
  }
  await needWorker(client, id, description);
  try {
    const status = await handle.executeUpdate(CONTROLS[action]);
    return `run ${id}: ${action} done; ${describeProgress(status)}`;
  } catch (err) {
    if (err instanceof WorkflowUpdateFailedError) throw new CliError(`run ${id} refused ${action}: ${err.cause?.message ?? err.message}`, EXIT.invalidInput);
    throw err;
  }
}

/** A Temporal that cannot be reached is exit code 3, in one line. */
export function unreachable(err: unknown, address: string): CliError | undefined {
  const text = `${(err as Error)?.message ?? err}`;
  if (err instanceof ServiceError || /connect|UNAVAILABLE|ECONNREFUSED|Failed to call/i.test(text)) {
    return new CliError(`Temporal is not reachable at ${address}: ${text.split('\n')[0]}`, EXIT.notFound);
  }
  return undefined;
}
