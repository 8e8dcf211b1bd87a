// A real Temporal dev server (the installed CLI, never a download) on free ports, per test file.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Connection } from '@temporalio/client';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Worker } from '@temporalio/worker';
import { SEARCH_ATTRIBUTE_KEYS } from '../../workflows/definitions.js';
import { freePort } from './minio.js';
import { halt } from './processes.js';
import { tools } from './tools.js';

export function startTemporal(extraArgs: string[] = []): Promise<TestWorkflowEnvironment> {
  return TestWorkflowEnvironment.createLocal({
    server: {
      executable: { type: 'existing-path', path: tools.temporal },
      ip: '127.0.0.1',
      ui: false,
      searchAttributes: SEARCH_ATTRIBUTE_KEYS,
      log: { format: 'pretty', level: 'warn' },
      extraArgs,
    },
  });
}

export const workflowsPath = new URL('../../workflows/index.ts', import.meta.url).pathname;

/** Runs a worker in the background for a whole test file; the returned function stops it. */
export function inBackground(worker: Worker): () => Promise<void> {
  const running = worker.run();
  return async () => {
    if (worker.getState() === 'RUNNING') worker.shutdown();
    await running;
  };
}

export interface RestartableTemporal {
  address: string;
  /** Killed (SIGKILL, as a crash) and down for `downMs`, then up again on the same port and database file. */
  restart(downMs: number): Promise<void>;
  stop(): Promise<void>;
}

/** A dev server that keeps its state in a database file, so that it can be restarted mid-run. */
export async function startRestartableTemporal(): Promise<RestartableTemporal> {
  const dir = await mkdtemp(join(tmpdir(), 'lawgpt-temporal-'));
  const port = await freePort();
  const address = `127.0.0.1:${port}`;
  const args = ['server', 'start-dev', '--headless', '--ip', '127.0.0.1', '--port', String(port), '--http-port', String(await freePort()), '--metrics-port', String(await freePort()),
    '--db-filename', join(dir, 'temporal.db'), ...SEARCH_ATTRIBUTE_KEYS.flatMap((k) => ['--search-attribute', `${k.name}=Keyword`]), '--log-level', 'error'];

  async function launch(): Promise<ChildProcess> {
    const server = spawn(tools.temporal, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    server.stderr!.on('data', (chunk) => (stderr += chunk));
    const reachable = () => Connection.connect({ address, connectTimeout: 1000 }).then((c) => c.close().then(() => true), () => false);
    for (let i = 0; !(await reachable()); i++) {
      if (server.exitCode !== null) throw new Error(`temporal exited: ${stderr}`);
      if (i > 120) throw new Error(`temporal did not start: ${stderr}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    return server;
  }

  let server = await launch();
  return {
    address,
    async restart(downMs: number) {
      await halt(server);
      await new Promise((r) => setTimeout(r, downMs));
      server = await launch();
    },
    async stop() {
      await halt(server);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
