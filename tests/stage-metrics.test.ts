// A stage's metrics and TensorBoard files going up to a real MinIO over a run that lasts days:
// unchanged files are not sent again, and a slow S3 does not grow a queue of uploads.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stageMetrics } from '../activities/stage-metrics.js';
import { ensureBucket, getText } from '../activities/s3.js';
import { metricsPartKey } from '../common/report.js';
import { startMinio, type TestMinio } from './helpers/minio.js';

let minio: TestMinio;
let work: string;

beforeAll(async () => {
  minio = await startMinio();
  await ensureBucket(minio.client, 'metrics');
  work = await mkdtemp(join(tmpdir(), 'lawgpt-metrics-'));
});
afterAll(async () => {
  await minio?.stop();
  await rm(work, { recursive: true, force: true });
});

/** A client that counts its puts by key, each taking `delayMs` longer, as a busy S3 does. */
function countingClient(delayMs = 0) {
  const puts: string[] = [];
  const client = new S3Client({ endpoint: minio.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: minio.credentials });
  client.middlewareStack.add(
    (next, context) => async (args) => {
      if (context.commandName === 'PutObjectCommand') {
        puts.push((args.input as { Key: string }).Key);
        await new Promise((r) => setTimeout(r, delayMs));
      }
      return next(args);
    },
    { step: 'initialize' },
  );
  return { client, puts };
}

const attempt = { scheduledMs: 1_700_000_000_000, number: 1 };

describe('stage metrics', () => {
  it('sends a TensorBoard file again only once it has changed', async () => {
    const tensorboard = join(work, 'tb');
    await mkdir(join(tensorboard, 'profiler'), { recursive: true });
    await writeFile(join(tensorboard, 'events.out.tfevents'), 'step 1');
    await writeFile(join(tensorboard, 'profiler', 'rank0.pt.trace.json.gz'), 'a large trace, written once');
    const { client, puts } = countingClient();
    const metrics = stageMetrics(client, { bucket: 'metrics', runId: 'r1', stage: 'pretrain' }, attempt, tensorboard, (m) => puts.push(`warned: ${m}`));
    metrics.progress({ step: 1, total_steps: 10, loss: 3 });
    await metrics.upload();
    await writeFile(join(tensorboard, 'events.out.tfevents'), 'step 1\nstep 2');
    metrics.progress({ step: 2, total_steps: 10, loss: 2.5 });
    await metrics.upload();
    await metrics.upload();
    client.destroy();
    const sent = (name: string) => puts.filter((key) => key.endsWith(name)).length;
    expect(sent('rank0.pt.trace.json.gz')).toBe(1);
    expect(sent('events.out.tfevents')).toBe(2);
    expect(sent('part-00000.jsonl')).toBe(3);
    expect(puts.filter((p) => p.startsWith('warned'))).toEqual([]);
  });

  it('sends one more upload after the one under way, not one for every request while S3 is slow', async () => {
    const { client, puts } = countingClient(300);
    const metrics = stageMetrics(client, { bucket: 'metrics', runId: 'r2', stage: 'pretrain' }, attempt, join(work, 'none'), (m) => puts.push(`warned: ${m}`));
    const asked = [];
    for (let step = 1; step <= 10; step++) {
      metrics.progress({ step, total_steps: 10, loss: 1 / step });
      asked.push(metrics.upload());
    }
    await Promise.all(asked);
    client.destroy();
    expect(puts).toHaveLength(2);
    // The one that followed sent every record there was.
    const body = await getText(minio.client, `s3://metrics/${metricsPartKey('r2', 'pretrain', attempt, 0)}`);
    expect(body!.trim().split('\n').map((line) => JSON.parse(line).step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });
});
