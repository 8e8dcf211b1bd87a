// What the workflow and its activities say to each other, and what a run reports to the outside.
// Types, constants and pure functions only, so that workflow code can import it freely.
import type { RunConfig } from './config.js';
import { dataInputNames, inputsOf, type StageName, type StageOutputs } from './stages.js';

/** Input of the `runStage` activity: one stage of one run, with its inputs as S3 URIs. */
export interface StageTask {
  runId: string;
  bucket: string;
  stage: StageName;
  inputs: Record<string, string>;
  config: RunConfig[StageName];
  split: RunConfig['data']['split'];
  cleaning: RunConfig['data']['cleaning'];
  /** What to do with bad records (data.on_bad_record, data.max_line_chars); absent in runs started before it existed. */
  records?: Pick<RunConfig['data'], 'on_bad_record' | 'max_line_chars'>;
  runtime: RunConfig['runtime'];
}

/** The held-out split as a stage applies it: the exam's own share only to the stages that read the
 * exam, so that changing it neither re-runs vocab and pretrain nor re-keys their caches. */
function splitFor(stage: StageName, split: RunConfig['data']['split']): RunConfig['data']['split'] {
  const { exam_heldout_percent, ...corpus } = split;
  return dataInputNames(stage).includes('exam') && exam_heldout_percent !== undefined ? { ...corpus, exam_heldout_percent } : corpus;
}

/** The `runStage` input for one stage of a run, its inputs taken from the data and `done` stages' outputs. */
export function stageTask(runId: string, config: RunConfig, stage: StageName, done: StageOutputs): StageTask {
  return {
    runId,
    bucket: config.bucket,
    stage,
    inputs: inputsOf(stage, config.data, done),
    config: config[stage],
    split: splitFor(stage, config.data.split),
    cleaning: config.data.cleaning,
    records: { on_bad_record: config.data.on_bad_record, max_line_chars: config.data.max_line_chars },
    runtime: config.runtime,
  };
}

/** A new run's workflow id: the config's name, how it was started where not the CLI, and the second it started. */
export const newRunId = (name: string, at: Date, via?: string) => [name, via, at.toISOString().replace(/[-:]/g, '').replace(/\..*/, '')].filter(Boolean).join('-');

/**
 * What the attempt that completed a stage cost: its trainer's wall time on how many processes, on
 * GPUs or CPUs, and the tokens it trained on (sequences x their length; 0 for stages that do not
 * train). A cached stage cost nothing and has none.
 */
export interface StageUsage {
  device: 'GPU' | 'CPU';
  processes: number;
  wallSeconds: number;
  /** wallSeconds x processes, in hours: GPU-hours on GPUs, CPU-hours (processes, not cores) otherwise. */
  deviceHours: number;
  tokens: number;
}

/** What the stages so far cost together, by device, and the tokens they trained on. */
export function usageTotals(results: Partial<Record<StageName, StageResult>>): { gpuHours: number; cpuHours: number; tokens: number } {
  const usages = Object.values(results).flatMap((r) => (r?.usage ? [r.usage] : []));
  const hours = (device: StageUsage['device']) => usages.filter((u) => u.device === device).reduce((sum, u) => sum + u.deviceHours, 0);
  return { gpuHours: hours('GPU'), cpuHours: hours('CPU'), tokens: usages.reduce((sum, u) => sum + u.tokens, 0) };
}

/** The same, in words, hours to `digits` places. */
export function describeUsage(results: Partial<Record<StageName, StageResult>>, digits: number): string {
  const total = usageTotals(results);
  return `${total.gpuHours.toFixed(digits)} GPU-hours, ${total.cpuHours.toFixed(digits)} CPU-hours, ${total.tokens} tokens trained`;
}

/** Output of `runStage`: where each output artifact now lives, and the trainer's metrics. */
export interface StageResult {
  stage: StageName;
  outputs: Record<string, string>;
  metrics: Record<string, number>;
  /** Set when the stage was skipped: the run whose identical stage produced these outputs. */
  cachedFrom?: string;
  usage?: StageUsage;
}

/** Sent by a running stage to its workflow, at most every `progress_report_seconds`. */
export interface StageProgress {
  stage: StageName;
  step: number;
  totalSteps: number;
  loss?: number;
  /** Step of the newest checkpoint committed to S3. */
  checkpoint?: number;
}

// `skipped`: not part of this run (its outputs, if needed, are given as artifacts).
export type StageState = 'pending' | 'awaiting-approval' | 'running' | 'paused' | 'completed' | 'cached' | 'failed' | 'gate-failed' | 'cancelled' | 'skipped';

/** Answer of the `status` query. */
export interface PipelineStatus {
  runName: string;
  stage: StageName | null;
  step: number | null;
  totalSteps: number | null;
  loss: number | null;
  checkpoint: number | null;
  paused: boolean;
  stages: Record<StageName, StageState>;
  results: Partial<Record<StageName, StageResult>>;
}

export interface PipelineResult {
  runName: string;
  stages: Partial<Record<StageName, StageResult>>;
  /** The eval report's metrics, when the run included eval. */
  evaluation?: Record<string, number>;
  /** The run report's page, s3://<bucket>/runs/<runId>/report/index.html (common/report.ts). */
  report?: string;
}

/** The model a run is given to start from (artifacts), if any: its base, pretrained or tuned model. */
export const givenModel = (config: RunConfig): string | undefined =>
  config.artifacts?.base?.model ?? config.artifacts?.pretrain?.model ?? config.artifacts?.sft?.model;

export const WORKFLOW_TYPE = 'lawgptPipeline';
// What the Temporal UI can filter runs by (all Keyword; the stack registers them).
export const SEARCH_ATTRIBUTES = {
  stage: 'LawgptStage',
  runName: 'LawgptRunName',
  corpus: 'LawgptCorpus',
  baseModel: 'LawgptBaseModel',
  // `cli` or `webhook`: how the run was started.
  trigger: 'LawgptTrigger',
} as const;
export type RunTrigger = 'cli' | 'webhook';
export const PROGRESS_SIGNAL = 'progress';
export const STATUS_QUERY = 'status';
export const PAUSE_UPDATE = 'pause';
export const RESUME_UPDATE = 'resume';
export const APPROVE_UPDATE = 'approve';
