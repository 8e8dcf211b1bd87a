// A run's report, and the per-stage curves it is drawn from: where they live in S3 and what they
// hold. Types and pure functions only, so that workflow code can import it.
//   s3://<bucket>/runs/<runId>/<stage>/metrics/<scheduled ms>-attempt-<n>/part-<k>.jsonl
//        the trainer's progress events and the committed checkpoints, per attempt, in parts
//   s3://<bucket>/runs/<runId>/<stage>/tensorboard/       the trainer's TensorBoard event files (contract's TENSORBOARD_DIR)
//   s3://<bucket>/runs/<runId>/<stage>/lineage.json       what the stage's outputs derive from, and the code that ran it (StageLineage)
//   s3://<bucket>/runs/<runId>/report/index.html, report.json   the run report: the page, and every number on it
import type { RunConfig } from './config.js';
import type { StageState, StageResult, StageUsage } from './run.js';
import type { StageName } from './stages.js';

export const metricsPrefix = (runId: string, stage: StageName) => `runs/${runId}/${stage}/metrics/`;
// Zero-padded, so that attempts and parts sort as text in the order they were written.
export const metricsPartKey = (runId: string, stage: StageName, attempt: { scheduledMs: number; number: number }, part: number) =>
  `${metricsPrefix(runId, stage)}${String(attempt.scheduledMs).padStart(13, '0')}-attempt-${attempt.number}/part-${String(part).padStart(5, '0')}.jsonl`;
export const lineageKey = (runId: string, stage: StageName) => `runs/${runId}/${stage}/lineage.json`;
export const tensorboardPrefix = (runId: string, stage: StageName) => `runs/${runId}/${stage}/tensorboard/`;
export const reportPrefix = (runId: string) => `runs/${runId}/report/`;
export const REPORT_PAGE = 'index.html';
export const REPORT_DATA = 'report.json';

/**
 * One line of a stage's metrics file: a trainer `progress` event as it came (at the worker's clock),
 * or a checkpoint once committed to S3, with its held-out loss where the stage evaluates.
 */
export type MetricsRecord =
  | { event: 'progress'; time: string; step: number; total_steps: number; loss?: number; learning_rate?: number }
  | { event: 'checkpoint'; time: string; step: number; eval_loss?: number };

/** What the report is built from, as the workflow (or a status query) knows it. */
export interface RunSnapshot {
  runId: string;
  config: RunConfig;
  stages: Record<StageName, StageState>;
  results: Partial<Record<StageName, StageResult>>;
  /** Why the run failed, for a report written as it ends that way. */
  error?: string;
}

export interface CurvePoint {
  step: number;
  loss?: number;
  learning_rate?: number;
  eval_loss?: number;
  time: string;
}

export interface KeptCheckpoint {
  step: number;
  uri: string;
  eval_loss?: number;
  trainer_version: string;
  /** Why retention keeps it: among the newest `runtime.keep_checkpoints`, the best held-out loss, or both. */
  kept_as: ('newest' | 'best')[];
}

export interface StageReport {
  stage: StageName;
  state: StageState;
  /** The run whose identical stage this one took its outputs from (stage cache). */
  cached_from?: string;
  outputs: Record<string, string>;
  metrics: Record<string, number>;
  usage?: StageUsage;
  /** Training loss per logged step, and held-out loss at each committed checkpoint (pretrain). */
  curve: CurvePoint[];
  checkpoints: KeptCheckpoint[];
  tensorboard?: string;
}

interface InputLineage {
  name: string;
  uri: string;
  objects: { key: string; size: number; etag: string }[];
}

/** lineage.json: written by the worker that completed the stage, from what it downloaded and ran. */
export interface StageLineage {
  stage: StageName;
  inputs: InputLineage[];
  trainer_version: string;
  git_commit: string;
}

/** report.json: every number the page shows, and where the run came from. */
export interface RunReport {
  report_version: 1;
  run_id: string;
  run_name: string;
  generated_at: string;
  error?: string;
  stages: StageReport[];
  vocabulary?: { tokens_per_char_base: number; tokens_per_char_merged: number; pieces_added: number; base_vocab_size: number; merged_vocab_size: number };
  /** Held-out bits per character of the same text, per model the run had. */
  bits_per_char: { base?: number; pretrained?: number; final?: number };
  exam?: {
    questions: number;
    accuracy: number;
    chance_accuracy: number;
    accuracy_generated?: number;
    accuracy_by_subject: Record<string, number>;
    /** Mean log-probability of the right answer, per model scored. */
    answer_logprob: { base?: number; pretrained?: number; final?: number };
    accuracy_by_model: { base?: number; pretrained?: number; final?: number };
  };
  /** Short-answer questions (case analyses) answered by the final model: mean ROUGE-L F1 against the references. */
  short_answer?: { questions: number; rouge_l: number };
  usage: { gpu_hours: number; cpu_hours: number; tokens: number };
  lineage: {
    config_hash: string;
    config: RunConfig;
    /** Per stage that ran (or, for a cached one, in the run that made its outputs). */
    stages: StageLineage[];
    /** The code that wrote this report. */
    report_git_commit: string;
  };
}
