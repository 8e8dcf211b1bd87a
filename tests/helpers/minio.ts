// A throwaway MinIO server on free ports with fresh credentials, for tests that need real S3.
// `restart` stops it and starts it again on the same port and data, as an outage would.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { createS3Client } from '../../activities/s3.js';
import { halt } from './processes.js';
import { tools } from './tools.js';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

export interface TestMinio {
  endpoint: string;
  credentials: { accessKeyId: string; secretAccessKey: string };
  client: S3Client;
  /** Down for `downMs`, then up again with the same data. */
  restart(downMs: number): Promise<void>;
  stop(): Promise<void>;
}

/** `env`: extra server settings, such as MINIO_NOTIFY_WEBHOOK_* for a notification target. */
export async function startMinio(env: Record<string, string> = {}): Promise<TestMinio> {
  const dir = await mkdtemp(join(tmpdir(), 'lawgpt-minio-'));
  let [port, consolePort] = [await freePort(), await freePort()];
  const credentials = { accessKeyId: `test-${randomBytes(4).toString('hex')}`, secretAccessKey: randomBytes(20).toString('hex') };
  let endpoint = `http://127.0.0.1:${port}`;

  async function launch(): Promise<ChildProcess> {
    const server = spawn(tools.minio, ['server', dir, '--address', `127.0.0.1:${port}`, '--console-address', `127.0.0.1:${consolePort}`, '--quiet'], {
      env: { ...process.env, ...env, MINIO_ROOT_USER: credentials.accessKeyId, MINIO_ROOT_PASSWORD: credentials.secretAccessKey },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    server.stderr!.on('data', (chunk) => (stderr += chunk));
    for (let i = 0; ; i++) {
      if (server.exitCode !== null) throw new Error(`minio exited: ${stderr}`);
      if (await fetch(`${endpoint}/minio/health/live`).then((r) => r.ok, () => false)) return server;
      if (i > 120) throw new Error(`minio did not start: ${stderr}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  let server: ChildProcess;
  for (let tried = 1; ; tried++) {
    try {
      server = await launch();
      break;
    } catch (err) {
      // A server started beside this one (a Temporal dev server binds a metrics port of its own
      // choosing) can take a port between freePort and MinIO's bind: choose again.
      if (tried === 3 || !/already in use/.test((err as Error).message)) throw err;
      [port, consolePort] = [await freePort(), await freePort()];
      endpoint = `http://127.0.0.1:${port}`;
    }
  }
  const client = createS3Client({ LAWGPT_S3_ENDPOINT: endpoint, LAWGPT_S3_FORCE_PATH_STYLE: 'true', AWS_REGION: 'us-east-1' }, credentials);
  return {
    endpoint,
    credentials,
    client,
    async restart(downMs: number) {
      await halt(server);
      await new Promise((r) => setTimeout(r, downMs));
      server = await launch();
    },
    async stop() {
      client.destroy();
      await halt(server);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
