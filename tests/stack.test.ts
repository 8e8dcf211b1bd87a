// infra/stack.sh as people use it (npm run stack:up / stack:status / stack:down), on free ports and
// a state folder of its own: Temporal, the webhook and a MinIO that notifies it of uploads.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CORPUS_UPLOAD_WORKFLOW } from '../common/uploads.js';
import { freePort } from './helpers/minio.js';
import { waitFor } from './helpers/processes.js';
import { tools } from './helpers/tools.js';

const run = promisify(execFile);
let state: string;
let env: NodeJS.ProcessEnv;
const ports: Record<string, number> = {};
const credentials = { user: `lawgpt-${randomBytes(4).toString('hex')}`, password: randomBytes(24).toString('hex'), token: randomBytes(24).toString('hex') };

const stack = (command: string) => run('bash', ['infra/stack.sh', command], { env });

beforeAll(async () => {
  state = await mkdtemp(join(tmpdir(), 'lawgpt-stack-'));
  for (const name of ['TEMPORAL', 'TEMPORAL_UI', 'MINIO', 'MINIO_CONSOLE', 'WEBHOOK']) ports[name] = await freePort();
  await writeFile(join(state, 'credentials.env'), `MINIO_ROOT_USER=${credentials.user}\nMINIO_ROOT_PASSWORD=${credentials.password}\nLAWGPT_WEBHOOK_TOKEN=${credentials.token}\n`, { mode: 0o600 });
  env = { ...process.env, LAWGPT_STATE: state, ...Object.fromEntries(Object.entries(ports).map(([name, port]) => [`LAWGPT_${name}_PORT`, String(port)])) };
});
afterAll(async () => {
  await stack('down').catch(() => undefined);
  await rm(state, { recursive: true, force: true });
});

describe('infra/stack.sh', () => {
  it('up starts Temporal, the webhook and MinIO notifying it; an upload under the shipped trigger reaches Temporal; down stops all three', { timeout: 180_000 }, async () => {
    await stack('up');
    expect((await stack('status')).stdout).toMatch(/^temporal: running.*\nwebhook: running.*\nminio: running/);
    expect((await fetch(`http://127.0.0.1:${ports.WEBHOOK}/healthz`)).status).toBe(200);

    // Uploaded as `mc cp` does, into the shipped demo trigger's place.
    const host = `http://${credentials.user}:${credentials.password}@127.0.0.1:${ports.MINIO}`;
    await writeFile(join(state, '总 则.md'), '第一条 为了保护民事主体的合法权益，调整民事关系，制定本法。');
    await run(tools.mc, ['--quiet', 'cp', join(state, '总 则.md'), 'stack/lawgpt/uploads/corpus/2026-11-27 试验/总 则.md'], { env: { ...process.env, MC_HOST_stack: host, MC_CONFIG_DIR: join(state, 'mc-test') } });

    const client = new Client({ connection: await Connection.connect({ address: `127.0.0.1:${ports.TEMPORAL}` }) });
    try {
      const watchers = await waitFor(
        'the upload to start its watcher',
        async () => {
          const found = [];
          for await (const w of client.workflow.list({ query: `WorkflowType = '${CORPUS_UPLOAD_WORKFLOW}'` })) found.push(w);
          return found.length ? found : undefined;
        },
        60_000,
        500,
      );
      expect(watchers).toHaveLength(1);
      expect(watchers[0].workflowId).toMatch(/^corpus-upload-demo-uploads-/);
    } finally {
      await client.connection.close();
    }

    await stack('down');
    expect((await stack('status')).stdout).toBe('temporal: stopped\nwebhook: stopped\nminio: stopped\n');
    await expect(fetch(`http://127.0.0.1:${ports.WEBHOOK}/healthz`)).rejects.toThrow();
  });
});
