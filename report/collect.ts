// Gathers a run's report (common/report.ts) from what the run knows of itself (its stages and their
// results) and what it left in S3: the stages' metrics, lineage records and kept checkpoints, and
// eval's report.json.
import type { S3Client } from '@aws-sdk/client-s3';
import { keptCheckpoints, checkpointsPrefix } from '../activities/checkpoints.js';
import { getText, listKeys, s3Uri } from '../activities/s3.js';
import { contentHash } from '../activities/stage-cache.js';
import { lineageKey, metricsPrefix, tensorboardPrefix, type CurvePoint, type MetricsRecord, type RunReport, type RunSnapshot, type StageLineage, type StageReport } from '../common/report.js';
import { usageTotals } from '../common/run.js';
import type { StageName } from '../common/stages.js';

const PART = /metrics\/(\d+-attempt-\d+)\/part-\d+\.jsonl$/;

/**
 * A stage's curve from its metrics files: attempts in order, a later attempt's step replacing an
 * earlier one's (a retry resumes from a checkpoint and runs the steps after it again), and the
 * held-out loss of each committed checkpoint on its step.
 */
export function mergeCurve(attempts: MetricsRecord[][]): CurvePoint[] {
  const points = new Map<number, CurvePoint>();
  for (const records of attempts) {
    for (const r of records) {
      if (r.event === 'progress' && r.loss !== undefined) {
        points.set(r.step, { ...points.get(r.step), step: r.step, loss: r.loss, learning_rate: r.learning_rate, time: r.time });
      }
      if (r.event === 'checkpoint' && r.eval_loss !== undefined) {
        points.set(r.step, { time: r.time, ...points.get(r.step), step: r.step, eval_loss: r.eval_loss });
      }
    }
  }
  return [...points.values()].sort((a, b) => a.step - b.step);
}

/** A stage's metrics parts, grouped by attempt; names are zero-padded, so text order is the order written. */
async function readCurve(s3: S3Client, bucket: string, runId: string, stage: StageName): Promise<CurvePoint[]> {
  const keys = (await listKeys(s3, s3Uri(bucket, metricsPrefix(runId, stage)))).filter((k) => PART.test(k)).sort();
  const attempts = new Map<string, MetricsRecord[]>();
  for (const key of keys) {
    const text = (await getText(s3, s3Uri(bucket, key))) ?? '';
    const attempt = PART.exec(key)![1];
    attempts.set(attempt, [...(attempts.get(attempt) ?? []), ...text.split('\n').filter((line) => line.trim()).map((line) => JSON.parse(line) as MetricsRecord)]);
  }
  return mergeCurve([...attempts.values()]);
}

async function stageReport(s3: S3Client, snapshot: RunSnapshot, stage: StageName): Promise<StageReport> {
  const { bucket, runtime } = snapshot.config;
  const result = snapshot.results[stage];
  // A cached stage trained in the run it was taken from: its curves and checkpoints are there.
  const madeBy = result?.cachedFrom ?? snapshot.runId;
  const tensorboard = s3Uri(bucket, tensorboardPrefix(madeBy, stage));
  const hasTensorboard = (await listKeys(s3, tensorboard)).length > 0;
  return {
    stage,
    state: snapshot.stages[stage],
    ...(result?.cachedFrom && { cached_from: result.cachedFrom }),
    outputs: result?.outputs ?? {},
    metrics: result?.metrics ?? {},
    ...(result?.usage && { usage: result.usage }),
    curve: await readCurve(s3, bucket, madeBy, stage),
    checkpoints: await keptCheckpoints(s3, checkpointsPrefix({ bucket, runId: madeBy, stage }), runtime.keep_checkpoints),
    ...(hasTensorboard && { tensorboard }),
  };
}

/** The lineage records of the stages that completed, each from the run that ran it. */
async function stageLineages(s3: S3Client, snapshot: RunSnapshot): Promise<StageLineage[]> {
  const found = [];
  for (const stage of snapshot.config.stages) {
    const result = snapshot.results[stage];
    if (!result) continue;
    const text = await getText(s3, s3Uri(snapshot.config.bucket, lineageKey(result.cachedFrom ?? snapshot.runId, stage)));
    if (text !== undefined) found.push(JSON.parse(text) as StageLineage);
  }
  return found;
}

async function evalReport(s3: S3Client, snapshot: RunSnapshot): Promise<Record<string, unknown> | undefined> {
  const folder = snapshot.results.eval?.outputs.report;
  if (!folder) return undefined;
  const text = await getText(s3, `${folder}report.json`);
  return text === undefined ? undefined : JSON.parse(text);
}

const numberOr = (value: unknown) => (typeof value === 'number' ? value : undefined);

/** `reportCommit`: the code writing the report; each stage's lineage names the code that ran it. */
export async function collectReport(s3: S3Client, snapshot: RunSnapshot, reportCommit: string, now: Date): Promise<RunReport> {
  const { config, results } = snapshot;
  const stages = [];
  for (const stage of config.stages) stages.push(await stageReport(s3, snapshot, stage));
  const vocab = results.vocab?.metrics;
  const evaluation = await evalReport(s3, snapshot);
  const totals = usageTotals(results);
  return {
    report_version: 1,
    run_id: snapshot.runId,
    run_name: config.name,
    generated_at: now.toISOString(),
    ...(snapshot.error && { error: snapshot.error }),
    stages,
    ...(vocab && {
      vocabulary: {
        tokens_per_char_base: vocab.heldout_tokens_per_char_base,
        tokens_per_char_merged: vocab.heldout_tokens_per_char_merged,
        pieces_added: vocab.pieces_added,
        base_vocab_size: vocab.base_vocab_size,
        merged_vocab_size: vocab.merged_vocab_size,
      },
    }),
    bits_per_char: {
      base: numberOr(evaluation?.base_heldout_bits_per_char),
      pretrained: numberOr(evaluation?.pretrained_heldout_bits_per_char),
      final: numberOr(evaluation?.heldout_bits_per_char),
    },
    ...(evaluation && numberOr(evaluation.exam_questions) && {
      exam: {
        questions: evaluation.exam_questions as number,
        accuracy: evaluation.exam_accuracy as number,
        chance_accuracy: evaluation.exam_chance_accuracy as number,
        accuracy_generated: numberOr(evaluation.exam_accuracy_generated),
        accuracy_by_subject: evaluation.exam_accuracy_by_subject as Record<string, number>,
        answer_logprob: { base: numberOr(evaluation.base_exam_answer_logprob), pretrained: numberOr(evaluation.pretrained_exam_answer_logprob), final: numberOr(evaluation.exam_answer_logprob) },
        accuracy_by_model: { base: numberOr(evaluation.base_exam_accuracy), pretrained: numberOr(evaluation.pretrained_exam_accuracy), final: numberOr(evaluation.exam_accuracy) },
      },
    }),
    ...(evaluation && numberOr(evaluation.short_answer_questions) && {
      short_answer: { questions: evaluation.short_answer_questions as number, rouge_l: evaluation.short_answer_rouge_l as number },
    }),
    usage: { gpu_hours: totals.gpuHours, cpu_hours: totals.cpuHours, tokens: totals.tokens },
    lineage: {
      config_hash: contentHash(config),
      config,
      stages: await stageLineages(s3, snapshot),
      report_git_commit: reportCommit,
    },
  };
}
