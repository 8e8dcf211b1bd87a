// A stage's curves, kept in S3 as they come (common/report.ts has the layout): the workflow hears
// of progress only every `progress_report_seconds`, the report and TensorBoard want every step.
// Each attempt writes its own folder, named by when the attempt was scheduled (a retry, or a stage
// resumed after a pause, comes later), in parts of PART_RECORDS lines: only the part still being
// written is uploaded again, at every committed checkpoint, on the first progress a minute or more
// after the last upload, and when the trainer exits; the TensorBoard files that changed go up with it.
import { existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import type { StageTask } from '../common/run.js';
import { metricsPartKey, tensorboardPrefix, type MetricsRecord } from '../common/report.js';
import { fileNamesUnder, putText, s3Uri, uploadFiles } from './s3.js';

const UPLOAD_EVERY_MS = 60_000;
const PART_RECORDS = 5_000;

export function stageMetrics(s3: S3Client, task: Pick<StageTask, 'bucket' | 'runId' | 'stage'>, attempt: { scheduledMs: number; number: number }, tensorboardDir: string, warn: (message: string) => void) {
  const records: MetricsRecord[] = [];
  let uploadedAt = Date.now();
  // Parts before this one are complete and uploaded.
  let firstOpenPart = 0;
  // The TensorBoard files as last uploaded (size and modification time): a profiler trace of
  // 100 MB, written once, goes up once, not at every upload of a run that lasts days.
  const sent = new Map<string, string>();
  let running: Promise<void> | undefined;
  let again = false;

  async function send(): Promise<void> {
    uploadedAt = Date.now();
    const lastPart = Math.floor(Math.max(records.length - 1, 0) / PART_RECORDS);
    const complete = Math.floor(records.length / PART_RECORDS);
    try {
      for (let part = firstOpenPart; part <= lastPart; part++) {
        const body = records.slice(part * PART_RECORDS, (part + 1) * PART_RECORDS).map((r) => JSON.stringify(r)).join('\n') + '\n';
        await putText(s3, s3Uri(task.bucket, metricsPartKey(task.runId, task.stage, attempt, part)), body, 'application/x-ndjson');
      }
      firstOpenPart = Math.max(firstOpenPart, complete);
      if (existsSync(tensorboardDir)) await sendTensorboard();
    } catch (err) {
      warn(`stage ${task.stage}: could not upload its metrics (${(err as Error).message}); training goes on`);
    }
  }

  async function sendTensorboard(): Promise<void> {
    const changed = new Map<string, string>();
    for (const name of await fileNamesUnder(tensorboardDir)) {
      const { size, mtimeMs } = await stat(join(tensorboardDir, ...name.split('/')));
      if (sent.get(name) !== `${size}:${mtimeMs}`) changed.set(name, `${size}:${mtimeMs}`);
    }
    await uploadFiles(s3, tensorboardDir, [...changed.keys()], s3Uri(task.bucket, tensorboardPrefix(task.runId, task.stage)));
    for (const [name, version] of changed) sent.set(name, version);
  }

  /**
   * Uploads what there is now; a failure is only warned of, the next try sends it again. One
   * upload at a time: asked for while one is going (S3 slower than a minute's records), one more
   * follows it with what there is then, instead of a queue that grows by one a minute.
   */
  function upload(): Promise<void> {
    again = true;
    running ??= (async () => {
      try {
        while (again) {
          again = false;
          await send();
        }
      } finally {
        running = undefined;
      }
    })();
    return running;
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
