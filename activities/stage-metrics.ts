// A stage's curves, kept in S3 as they come (common/report.ts has the layout): the workflow hears
// of progress only every `progress_report_seconds`, the report and TensorBoard want every step.
// Each attempt writes its own file, rewritten whole at every committed checkpoint, at most a
// minute apart otherwise, and when the trainer exits; the TensorBoard folder goes up with it.
import { existsSync } from 'node:fs';
import type { S3Client } from '@aws-sdk/client-s3';
import type { StageTask } from '../common/run.js';
import { metricsKey, tensorboardPrefix, type MetricsRecord } from '../common/report.js';
import { putText, s3Uri, uploadDir } from './s3.js';

const UPLOAD_EVERY_MS = 60_000;

export function stageMetrics(s3: S3Client, task: Pick<StageTask, 'bucket' | 'runId' | 'stage'>, attempt: number, tensorboardDir: string, warn: (message: string) => void) {
  const records: MetricsRecord[] = [];
  let uploads: Promise<void> = Promise.resolve();
  let uploadedAt = Date.now();

  /** Uploads what there is now, after any upload still going; a failure is only warned of, the next try sends it all again. */
  function upload(): Promise<void> {
    uploadedAt = Date.now();
    const body = records.map((r) => JSON.stringify(r)).join('\n') + '\n';
    uploads = uploads.then(async () => {
      try {
        await putText(s3, s3Uri(task.bucket, metricsKey(task.runId, task.stage, attempt)), body, 'application/x-ndjson');
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
