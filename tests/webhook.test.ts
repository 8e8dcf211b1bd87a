// The webhook on the real stack: the Temporal dev server, and a real MinIO notifying it of uploads.
// No stage runs here (no activity worker): a run that starts is enough, and is what is counted.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBucket } from '../activities/s3.js';
import { WORKFLOW_TYPE } from '../common/run.js';
import { CORPUS_UPLOAD_WORKFLOW } from '../common/uploads.js';
import { CORPUS_KEY, TRIGGER_KEY } from '../workflows/definitions.js';
import { createWebhook, MAX_BODY_BYTES } from '../webhook/handler.js';
import { loadTriggers } from '../webhook/triggers.js';
import { freePort, startMinio, type TestMinio } from './helpers/minio.js';
import { waitFor } from './helpers/processes.js';
import { inBackground, startTemporal, workflowsPath } from './helpers/temporal.js';
import { tools } from './helpers/tools.js';

const QUIET_SECONDS = 3;
const token = randomBytes(24).toString('hex');
let env: TestWorkflowEnvironment;
let minio: TestMinio;
let work: string;
let stopWorker: (() => Promise<void>) | undefined;
let webhook: Server;
let url: string;
const logged: string[] = [];
// What MinIO delivered, recorded by a pass-through in front of the webhook, to deliver it again.
const delivered: { body: string; status: number }[] = [];
let relay: Server;

async function post(body: string | object, headers: Record<string, string> = { authorization: `Bearer ${token}` }) {
  const response = await fetch(`${url}/s3-events`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

async function runs(type: string) {
  const found = [];
  for await (const w of env.client.workflow.list({ query: `WorkflowType = '${type}'` })) found.push(w);
  return found;
}

beforeAll(async () => {
  env = await startTemporal();
  work = await mkdtemp(join(tmpdir(), 'lawgpt-webhook-'));
  const triggersPath = join(work, 'triggers.json');
  await writeFile(
    triggersPath,
    JSON.stringify({
      triggers: [
        { name: 'incoming', bucket: 'lawgpt-hook', prefix: 'incoming/', suffixes: ['.md', '.txt'], config: 'configs/demo.json', quiet_seconds: QUIET_SECONDS, versioned_folders: true },
        // Quiet for ten minutes: only the ready marker can start its run within the test.
        { name: 'ready', bucket: 'lawgpt-hook', prefix: 'ready/', config: 'configs/demo.json', quiet_seconds: 600 },
      ],
    }),
  );
  const worker = await Worker.create({ connection: env.nativeConnection, taskQueue: 'webhook', workflowsPath, activities: {} });
  stopWorker = inBackground(worker);
  webhook = createWebhook({ temporal: env.client, taskQueue: 'webhook', token, triggers: loadTriggers(triggersPath), log: (line) => logged.push(line) });
  const port = await freePort();
  await new Promise<void>((resolve) => webhook.listen(port, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${port}`;

  relay = createServer(async (request, response) => {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks).toString('utf8');
    const forwarded = await fetch(`${url}${request.url}`, { method: request.method, headers: { authorization: request.headers.authorization ?? '', 'content-type': 'application/json' }, body: request.method === 'POST' ? body : undefined });
    if (request.method === 'POST') delivered.push({ body, status: forwarded.status });
    response.writeHead(forwarded.status).end(await forwarded.text());
  });
  const relayPort = await freePort();
  await new Promise<void>((resolve) => relay.listen(relayPort, '127.0.0.1', resolve));
  // MinIO notifies through the relay, with the token, keeping undelivered events in a queue dir.
  minio = await startMinio({
    MINIO_NOTIFY_WEBHOOK_ENABLE_LAWGPT: 'on',
    MINIO_NOTIFY_WEBHOOK_ENDPOINT_LAWGPT: `http://127.0.0.1:${relayPort}/s3-events`,
    MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_LAWGPT: token,
    MINIO_NOTIFY_WEBHOOK_QUEUE_DIR_LAWGPT: join(work, 'minio-events'),
  });
  await ensureBucket(minio.client, 'lawgpt-hook');
  for (const prefix of ['incoming/', 'ready/']) await mc('event', 'add', 'test/lawgpt-hook', 'arn:minio:sqs::LAWGPT:webhook', '--event', 'put', '--prefix', prefix, '--ignore-existing');
});
afterAll(async () => {
  webhook?.close();
  relay?.close();
  await stopWorker?.();
  await env?.teardown();
  await minio?.stop();
  await rm(work, { recursive: true, force: true });
});

/** mc against the test MinIO; its credentials go in through the environment, never a config file. */
function mc(...args: string[]) {
  const host = new URL(minio.endpoint);
  host.username = minio.credentials.accessKeyId;
  host.password = minio.credentials.secretAccessKey;
  return promisify(execFile)(tools.mc, ['--quiet', '--no-color', ...args], { env: { ...process.env, MC_HOST_test: host.toString().replace(/\/$/, ''), MC_CONFIG_DIR: join(work, 'mc') } });
}

describe('webhook requests', () => {
  it('answers the health check, and 404 elsewhere', async () => {
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    expect((await fetch(`${url}/other`)).status).toBe(404);
  });

  it('refuses a missing or wrong token, a body over 1 MiB, malformed JSON and unknown shapes, and starts nothing', async () => {
    const created = { Records: [{ eventName: 's3:ObjectCreated:Put', s3: { bucket: { name: 'lawgpt-hook' }, object: { key: 'incoming/v0/a.md', eTag: 'e', sequencer: '1' } } }] };
    expect((await post(created, {})).status).toBe(401);
    expect((await post(created, { authorization: `Bearer ${token.slice(1)}x` })).status).toBe(401);
    expect((await post(created, { authorization: token })).status).toBe(401);
    expect((await post(`{"Records": [], "pad": "${'x'.repeat(MAX_BODY_BYTES)}"}`)).status).toBe(413);
    expect(await post('{"Records": [')).toMatchObject({ status: 400, body: { error: expect.stringMatching(/^malformed JSON/) } });
    expect(await post({ hello: 'world' })).toMatchObject({ status: 400, body: { error: expect.stringMatching(/^unknown body/) } });
    expect(await runs(CORPUS_UPLOAD_WORKFLOW)).toEqual([]);
  });

  it('answers a test event, deletes and keys outside every trigger with 2xx, logs them ignored, and starts nothing', async () => {
    const records = (eventName: string, key: string) => ({ Records: [{ eventName, s3: { bucket: { name: 'lawgpt-hook' }, object: { key } } }] });
    expect((await post({ Service: 'Amazon S3', Event: 's3:TestEvent', Bucket: 'lawgpt-hook' })).status).toBe(200);
    expect((await post(records('s3:ObjectRemoved:Delete', 'incoming/v0/a.md'))).status).toBe(200);
    expect((await post(records('s3:ObjectCreated:Put', 'elsewhere/a.md'))).status).toBe(200);
    expect((await post(records('s3:ObjectCreated:Put', 'incoming/v0/picture.png'))).status).toBe(200);
    expect(logged).toEqual(expect.arrayContaining(['ignored: s3:TestEvent', 'ignored: removed s3://lawgpt-hook/incoming/v0/a.md', 'ignored: created s3://lawgpt-hook/elsewhere/a.md is under no trigger']));
    expect(await runs(CORPUS_UPLOAD_WORKFLOW)).toEqual([]);
  });
});

describe('uploads to the real MinIO', () => {
  it('mc cp --recursive of a folder with Chinese names and spaces starts ONE run on it; the same events again start none', { timeout: 120_000 }, async () => {
    const folder = join(work, '2026-11-27 民法');
    await mkdir(join(folder, '合同 编'), { recursive: true });
    const statutes = join(process.env.LAWGPT_SHARED_DATA!, 'corpus/statutes');
    const first = (await readdir(statutes, { recursive: true })).filter((e) => e.endsWith('.md')).sort()[0];
    const statute = await readFile(join(statutes, first), 'utf8');
    await writeFile(join(folder, '民法 典.md'), statute);
    await writeFile(join(folder, '合同 编', '第 一 章.md'), statute.slice(0, 2000));
    // Large enough for a multipart upload.
    await writeFile(join(folder, '判决 汇编.txt'), statute.repeat(Math.ceil((70 << 20) / statute.length)));
    await mc('cp', '--recursive', folder, 'test/lawgpt-hook/incoming/');

    const corpus = 's3://lawgpt-hook/incoming/2026-11-27 民法/';
    const [run] = await waitFor('a pipeline run', async () => ((await runs(WORKFLOW_TYPE)).length ? runs(WORKFLOW_TYPE) : undefined), 60_000, 500);
    const attributes = (await env.client.workflow.getHandle(run.workflowId).describe()).typedSearchAttributes;
    expect(attributes.get(CORPUS_KEY)).toBe(corpus);
    expect(attributes.get(TRIGGER_KEY)).toBe('webhook');
    expect(await (await env.client.workflow.getHandle(run.workflowId).describe()).staticSummary()).toMatch(new RegExp(`^demo: .* on ${corpus}$`));
    expect(delivered.length).toBeGreaterThanOrEqual(3);
    expect(delivered.every((d) => d.status === 200)).toBe(true);
    expect(delivered.some((d) => d.body.includes('CompleteMultipartUpload'))).toBe(true);
    console.log(`${delivered.length} events from MinIO started run ${run.workflowId} on ${corpus}`);

    // MinIO's retries deliver what it already delivered: nothing new starts.
    for (const { body } of [...delivered]) expect((await post(body)).status).toBe(200);
    await new Promise((r) => setTimeout(r, (QUIET_SECONDS + 2) * 1000));
    expect(await runs(WORKFLOW_TYPE)).toHaveLength(1);

    // A new object in the folder after its run started is new data: a second run, once quiet again.
    await writeFile(join(folder, '补充.md'), statute.slice(0, 3000));
    await mc('cp', join(folder, '补充.md'), `test/lawgpt-hook/incoming/2026-11-27 民法/补充.md`);
    await waitFor('a second run', async () => ((await runs(WORKFLOW_TYPE)).length === 2 ? true : undefined), 60_000, 500);

    // The token is in no log line and no history.
    const histories = await Promise.all([...(await runs(WORKFLOW_TYPE)), ...(await runs(CORPUS_UPLOAD_WORKFLOW))].map((w) => env.client.workflow.getHandle(w.workflowId, w.runId).fetchHistory()));
    for (const text of [logged.join('\n'), JSON.stringify(histories)]) expect(text).not.toContain(token);
  });

  it('a _READY object ends the quiet period at once', { timeout: 120_000 }, async () => {
    const before = (await runs(WORKFLOW_TYPE)).length;
    await writeFile(join(work, 'a.md'), '第一条 为了保护民事主体的合法权益，制定本法。'.repeat(20));
    await mc('cp', join(work, 'a.md'), 'test/lawgpt-hook/ready/a.md');
    await new Promise((r) => setTimeout(r, 2000));
    expect(await runs(WORKFLOW_TYPE)).toHaveLength(before);
    await writeFile(join(work, '_READY'), '');
    await mc('cp', join(work, '_READY'), 'test/lawgpt-hook/ready/_READY');
    await waitFor('the run', async () => ((await runs(WORKFLOW_TYPE)).some((w) => w.typedSearchAttributes.get(CORPUS_KEY) === 's3://lawgpt-hook/ready/') ? true : undefined), 60_000, 250);
    expect(await runs(WORKFLOW_TYPE)).toHaveLength(before + 1);
  });
});
