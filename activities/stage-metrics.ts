// A stage's curves, kept in S3 as they come (common/report.ts has the layout): the workflow hears
// of progress only every `progress_report_seconds`, the report and TensorBoard want every step.
// Each attempt writes its own folder, named by when the attempt was scheduled (a retry, or a stage
// resumed after a pause, comes later), in parts of PART_RECORDS lines: only the part still being
// written is uploaded again, at every committed checkpoint, on the first progress a minute or more
// after the last upload, and when the trainer exits; the TensorBoard folder goes up with it.
import { existsSync } from 'node:fs';
import type { S3Client } from '@aws-sdk/client-s3';
import type { StageTask } from '../common/run.js';
import { metricsPartKey, tensorboardPrefix, type MetricsRecord } from '../common/report.js';
import { putText, s3Uri, uploadDir } from './s3.js';

const UPLOAD_EVERY_MS = 60_000;
const PART_RECORDS = 5_000;

export function stageMetrics(s3: S3Client, task: Pick<StageTask, 'bucket' | 'runId' | 'stage'>, attempt: { scheduledMs: number; number: number }, tensorboardDir: string, warn: (message: string) => void) {
  const records: MetricsRecord[] = [];
  let uploads: Promise<void> = Promise.resolve();
  let uploadedAt = Date.now();
  // Parts before this one are complete and uploaded.
  let firstOpenPart = 0;

  /** Uploads what there is now, after any upload still going; a failure is only warned of, the next try sends it again. */
  function upload(): Promise<void> {
    uploadedAt = Date.now();
    const lastPart = Math.floor(Math.max(records.length - 1, 0) / PART_RECORDS);
    const parts: { part: number; body: string }[] = [];
    for (let part = firstOpenPart; part <= lastPart; part++) {
      parts.push({ part, body: records.slice(part * PART_RECORDS, (part + 1) * PART_RECORDS).map((r) => JSON.stringify(r)).join('\n') + '\n' });
    }
    const complete = Math.floor(records.length / PART_RECORDS);
    uploads = uploads.then(async () => {
      try {
        for (const { part, body } of parts) await putText(s3, s3Uri(task.bucket, metricsPartKey(task.runId, task.stage, attempt, part)), body, 'application/x-ndjson');
        firstOpenPart = Math.max(firstOpenPart, complete);
        if (existsSync(tensorboardDir)) await uploadDir(s3, tensorboardDir, s3Uri(task.bucket, tensorboardPrefix(task.runId, task.stage)));
      } catch (err) {
        warn(`stage ${task.stage}: could not upload its metrics (${(err as Error).message}); training goes on`);
      }
    });
    return uploads;
  }

  return {
    progress(event: Omit<Extract<MetricsRecord, { event: 'progress' }>, 'event' | 'time'>) {
      records.push({ event: 'progress', time: new Date().toISOString(), ...event });
      if (Date.now() - uploadedAt >= UPLOAD_EVERY_MS) void upload();
    },
    checkpoint(step: number, evalLoss: number | undefined) {
      records.push({ event: 'checkpoint', time: new Date().toISOString(), step, ...(evalLoss !== undefined && { eval_loss: evalLoss }) });
      void upload();
    },
    upload,
  };
}
