// The watcher of a corpus uploaded a document a file: thousands of events for one folder. On a
// Temporal server that suggests continue-as-new after 200 history events (a real server suggests it
// after thousands), each of the watcher's executions must stay short, and the folder must still get
// exactly one run, with redeliveries recognised across executions.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WORKFLOW_TYPE } from '../common/run.js';
import { CORPUS_UPLOAD_WORKFLOW } from '../common/uploads.js';
import { createWebhook } from '../webhook/handler.js';
import { loadTriggers } from '../webhook/triggers.js';
import { freePort } from './helpers/minio.js';
import { waitFor } from './helpers/processes.js';
import { inBackground, startTemporal, workflowsPath } from './helpers/temporal.js';

const SUGGEST_AFTER_EVENTS = 200;
// Longer than any pause between two of the test's posts, even on a busy machine: one run, not two.
const QUIET_SECONDS = 8;
const token = 'corpus-upload-test-token';
let env: TestWorkflowEnvironment;
let work: string;
let stopWorker: () => Promise<void>;
let webhook: Server;
let url: string;

beforeAll(async () => {
  env = await startTemporal(['--dynamic-config-value', `limit.historyCount.suggestContinueAsNew=${SUGGEST_AFTER_EVENTS}`]);
  work = await mkdtemp(join(tmpdir(), 'lawgpt-corpus-upload-'));
  const triggers = join(work, 'triggers.json');
  await writeFile(triggers, JSON.stringify({ triggers: [{ name: 'bulk', bucket: 'lawgpt-bulk', prefix: 'incoming/', config: 'configs/demo.json', quiet_seconds: QUIET_SECONDS }] }));
  stopWorker = inBackground(await Worker.create({ connection: env.nativeConnection, taskQueue: 'bulk', workflowsPath, activities: {} }));
  webhook = createWebhook({ temporal: env.client, taskQueue: 'bulk', token, triggers: loadTriggers(triggers), log: () => undefined });
  const port = await freePort();
  await new Promise<void>((resolve) => webhook.listen(port, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${port}`;
});
afterAll(async () => {
  webhook?.close();
  await stopWorker?.();
  await env?.teardown();
  await rm(work, { recursive: true, force: true });
});

/** What MinIO would send for these objects of the folder incoming/judgments/. */
const created = (numbers: number[]) => ({
  Records: numbers.map((n) => ({
    eventName: 's3:ObjectCreated:Put',
    s3: { bucket: { name: 'lawgpt-bulk' }, object: { key: encodeURIComponent(`incoming/judgments/判决-${n}.md`), eTag: `etag-${n}`, sequencer: `${n}` } },
  })),
});

async function post(body: object) {
  const response = await fetch(`${url}/s3-events`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  expect(response.status).toBe(200);
}

async function executions(query: string) {
  const found = [];
  for await (const w of env.client.workflow.list({ query })) found.push(w);
  return found;
}

describe('a corpus uploaded a document a file', () => {
  it('keeps each execution of its watcher short, starts one run, and still knows events delivered again', { timeout: 240_000 }, async () => {
    const objects = Array.from({ length: 1000 }, (_, i) => i);
    for (let i = 0; i < objects.length; i += 50) await post(created(objects.slice(i, i + 50)));
    await waitFor('a pipeline run', async () => ((await executions(`WorkflowType = '${WORKFLOW_TYPE}'`)).length ? true : undefined), 120_000, 500);

    // MinIO delivering the first events again, after the watcher has continued as new: no new run.
    await post(created(objects.slice(0, 50)));
    await new Promise((r) => setTimeout(r, (QUIET_SECONDS + 2) * 1000));
    expect(await executions(`WorkflowType = '${WORKFLOW_TYPE}'`)).toHaveLength(1);

    const watchers = await executions(`WorkflowType = '${CORPUS_UPLOAD_WORKFLOW}'`);
    const histories = await Promise.all(watchers.map((w) => env.client.workflow.getHandle(w.workflowId, w.runId).fetchHistory()));
    const lengths = histories.map((h) => h.events!.length);
    console.log(`1,000 objects: the watcher ran as ${watchers.length} executions of ${lengths.join(', ')} history events`);
    expect(watchers.length).toBeGreaterThan(2);
    for (const length of lengths) expect(length).toBeLessThan(3 * SUGGEST_AFTER_EVENTS);
    // What the signals carry is a fixed-size id, not the key.
    const ids = histories.flatMap((h) => h.events!.flatMap((e) => e.workflowExecutionSignaledEventAttributes?.input?.payloads ?? [])).map((p) => JSON.parse(Buffer.from(p.data!).toString()).id);
    expect(ids.length).toBeGreaterThanOrEqual(1000);
    expect(ids.every((id) => /^[0-9a-f]{32}$/.test(id))).toBe(true);
  });
});
