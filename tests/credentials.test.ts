// Wrong S3 credentials, on the real Temporal and the real MinIO: the worker says so at start in one
// line, a stage fails at once instead of retrying, and no message ever carries the secret.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { WorkflowFailedError } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createS3Client, credentialsRefusal } from '../activities/s3.js';
import { createActivities } from '../activities/index.js';
import { STAGE_WORKER_OPTIONS } from '../activities/stage.js';
import { parseRunConfig } from '../common/config.js';
import { lawgptPipeline } from '../workflows/pipeline.js';
import { startMinio, type TestMinio } from './helpers/minio.js';
import { startTemporal, workflowsPath } from './helpers/temporal.js';
import { tools } from './helpers/tools.js';

const WRONG_SECRET = 'wrong-secret-0123456789abcdef';
let env: TestWorkflowEnvironment;
let minio: TestMinio;

beforeAll(async () => {
  [env, minio] = await Promise.all([startTemporal(), startMinio()]);
});
afterAll(async () => {
  await Promise.all([env?.teardown(), minio?.stop()]);
});

const wrongClient = () =>
  createS3Client({ LAWGPT_S3_ENDPOINT: minio.endpoint, LAWGPT_S3_FORCE_PATH_STYLE: 'true', AWS_REGION: 'us-east-1' }, { accessKeyId: minio.credentials.accessKeyId, secretAccessKey: WRONG_SECRET });

describe('wrong S3 credentials', () => {
  it('the worker says so at start, in one line without the secret, and exits', async () => {
    expect(await credentialsRefusal(minio.client)).toBeUndefined();
    const failed = await promisify(execFile)('npx', ['tsx', 'worker.ts'], {
      env: {
        ...process.env,
        LAWGPT_S3_ENDPOINT: minio.endpoint,
        LAWGPT_S3_FORCE_PATH_STYLE: 'true',
        AWS_ACCESS_KEY_ID: minio.credentials.accessKeyId,
        AWS_SECRET_ACCESS_KEY: WRONG_SECRET,
        TEMPORAL_ADDRESS: env.connection.options.address,
      },
    }).then(
      () => undefined,
      (err: { code: number; stderr: string }) => err,
    );
    expect(failed?.code).toBe(1);
    expect(failed!.stderr.trim().split('\n')).toEqual(["S3 refused this worker's credentials (SignatureDoesNotMatch): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY where it runs"]);
  });

  it('fails the stage at once, naming the bucket and never the secret', async () => {
    const demo = JSON.parse(readFileSync(new URL('../configs/demo.json', import.meta.url), 'utf8'));
    const config = parseRunConfig({ ...demo, bucket: 'lawgpt-credentials', stages: ['base'], runtime: { max_attempts: 5 } });
    const worker = await Worker.create({
      connection: env.nativeConnection,
      taskQueue: 'credentials',
      workflowsPath,
      activities: createActivities({ s3: wrongClient(), settings: { LAWGPT_PYTHON: tools.python, LAWGPT_WORK_DIR: '/nonexistent' }, trainerVersion: async () => 'v' }),
      ...STAGE_WORKER_OPTIONS,
    });
    const handle = await worker.runUntil(async () => {
      const started = await env.client.workflow.start(lawgptPipeline, { workflowId: 'credentials-run', taskQueue: 'credentials', args: [config] });
      await started.result().catch(() => undefined);
      return started;
    });
    const error = await handle.result().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(WorkflowFailedError);
    const message = ((error as WorkflowFailedError).cause as Error).message;
    expect(message).toMatch(/^stage base failed: S3 refused this worker's credentials for bucket lawgpt-credentials \(SignatureDoesNotMatch\)/);
    const history = JSON.stringify(await handle.fetchHistory());
    expect(history).not.toContain(WRONG_SECRET);
    expect(history).not.toContain(minio.credentials.secretAccessKey);
    // One attempt of the stage's cache lookup, and one of the run report, which S3 refuses as well: neither refusal was retried.
    const events = (await handle.fetchHistory()).events!;
    const typeOf = new Map(events.filter((e) => e.activityTaskScheduledEventAttributes).map((e) => [String(e.eventId), e.activityTaskScheduledEventAttributes!.activityType!.name]));
    const started = events.filter((e) => e.activityTaskStartedEventAttributes).map((e) => [typeOf.get(String(e.activityTaskStartedEventAttributes!.scheduledEventId)), e.activityTaskStartedEventAttributes!.attempt]);
    expect(started).toEqual([['stageCache', 1], ['writeReport', 1]]);
  });
});
