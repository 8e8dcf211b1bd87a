// The trainer launcher with a stand-in trainer: event parsing, exits, cancellation, environment.
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeepSpeedConfig } from '../common/config.js';
import type { TrainerEvent } from '../common/contract.js';
import type { StageName } from '../common/stages.js';
import { launchTrainer, trainerEnv } from '../activities/trainer-process.js';
import { createFakeTrainer } from './helpers/fake-trainer.js';
import { freePort } from './helpers/minio.js';
import { findProcesses, waitFor } from './helpers/processes.js';
import { startSshHosts, type SshHosts } from './helpers/sshd.js';
import { tools } from './helpers/tools.js';

let fake: string;
let work: string;

beforeAll(async () => {
  fake = await createFakeTrainer();
  work = await mkdtemp(join(tmpdir(), 'lawgpt-launch-'));
});
afterAll(async () => {
  await rm(fake, { recursive: true, force: true });
  await rm(work, { recursive: true, force: true });
});

async function launch(stage: StageName, signal?: AbortSignal, env: NodeJS.ProcessEnv = {}, requestLater?: Promise<unknown>) {
  const requestPath = join(work, `${stage}.json`);
  const write = () => writeFile(requestPath, JSON.stringify({ output_dir: join(work, `${stage}-out`), inputs: { corpus: '/c' } }));
  await rm(requestPath, { force: true });
  if (requestLater) void requestLater.then(write);
  else await write();
  const seen: TrainerEvent[] = [];
  const exit = await launchTrainer({
    python: tools.python,
    stage,
    requestPath,
    waitForRequest: requestLater !== undefined,
    cwd: work,
    signal,
    onEvent: (e) => seen.push(e),
    env: { ...trainerEnv({ ...process.env, ...env }), PYTHONPATH: fake },
  });
  return { exit, seen };
}

// A killed process can linger as a zombie until someone reaps it; that one is not running.
const alive = async (pid: number) => (await findProcesses('')).includes(pid);

describe('launchTrainer', () => {
  it('parses every event, in order, as it arrives', async () => {
    const { exit, seen } = await launch('vocab');
    expect(exit.code).toBe(0);
    expect(seen.map((e) => e.event)).toEqual(['started', 'progress', 'progress', 'completed']);
    expect(seen[2]).toEqual({ event: 'progress', step: 2, total_steps: 2, loss: 1.5 });
    expect(exit.events).toEqual(seen);
    expect(exit.protocolErrors).toEqual([]);
  });

  it('keeps the stderr tail of a crashed trainer', async () => {
    const { exit } = await launch('base');
    expect(exit.code).toBe(3);
    expect(exit.stderrTail).toContain('MemoryError: out of memory in sentencepiece');
  });

  it('reports stdout lines that are not contract events', async () => {
    const { exit, seen } = await launch('sft');
    expect(exit.protocolErrors).toEqual(['hello from a stray print']);
    expect(seen.map((e) => e.event)).toEqual(['started', 'completed']);
  });

  it('kills the whole process group when aborted', async () => {
    const abort = new AbortController();
    const pending = launch('eval', abort.signal);
    const pidFile = join(work, 'grandchild.pid');
    let grandchild = 0;
    for (let i = 0; i < 100 && !grandchild; i++) {
      await new Promise((r) => setTimeout(r, 100));
      grandchild = Number(await readFile(pidFile, 'utf8').catch(() => '0'));
    }
    expect(await alive(grandchild)).toBe(true);
    abort.abort();
    const { exit } = await pending;
    expect(exit.signal).toBe('SIGTERM');
    await new Promise((r) => setTimeout(r, 200));
    expect(await alive(grandchild)).toBe(false);
  });

  it('passes no credentials down to the trainer', async () => {
    const secrets = {
      AWS_SECRET_ACCESS_KEY: 's3cr3t',
      AWS_ACCESS_KEY_ID: 'id',
      MINIO_ROOT_PASSWORD: 'pw',
      HF_TOKEN: 'hf',
      OPENAI_API_KEY: 'sk',
      GOOGLE_APPLICATION_CREDENTIALS: '/keys.json',
      SOME_SERVICE_URL: 'https://user:pw@host',
    };
    const { exit } = await launch('vocab', undefined, secrets);
    const envLine = exit.stderrTail.split('\n').find((l) => l.startsWith('env: '))!;
    for (const name of Object.keys(secrets)) expect(envLine).not.toContain(name);
    expect(envLine).toContain('HF_HUB_OFFLINE');
    expect(envLine).toContain('PATH');
  });

  it('lets a trainer wait for its request, then runs it as usual', async () => {
    const { exit, seen } = await launch('vocab', undefined, {}, new Promise((r) => setTimeout(r, 1000)));
    expect(exit.code).toBe(0);
    expect(seen.map((e) => e.event)).toEqual(['started', 'progress', 'progress', 'completed']);
  });

  it('kills at once, without asking it to save, a trainer still waiting for its request', async () => {
    const abort = new AbortController();
    setTimeout(() => abort.abort(), 1000);
    const { exit, seen } = await launch('vocab', abort.signal, {}, new Promise(() => undefined));
    expect(exit.signal).toBe('SIGKILL');
    expect(seen).toEqual([]);
  });

  it('stops at once a trainer whose cancel came before it started', async () => {
    const abort = new AbortController();
    abort.abort();
    const started = Date.now();
    const { exit } = await launch('eval', abort.signal);
    expect(exit.signal).toBe('SIGTERM');
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  // Across hosts every rank is a child of its host's sshd (two loopback hosts here, as in
  // chaos.test.ts), out of reach of the launcher's process group.
  describe('across hosts', () => {
    let hosts: SshHosts;
    beforeAll(async () => {
      hosts = await startSshHosts(['127.0.0.1', '127.0.0.2'], join(work, 'ssh'));
    });
    afterAll(async () => {
      await hosts?.stop();
    });

    /**
     * A launch with one rank on each host of a fake stage deaf to the stop file: eval, or pretrain
     * under a run id beginning "hangs", deaf to SIGTERM too, as a rank stuck in a collective is.
     */
    async function acrossHosts(name: string, stage: 'eval' | 'pretrain') {
      const requestPath = join(work, `${name}.json`);
      await writeFile(requestPath, JSON.stringify({ run_id: name, output_dir: join(work, `${name}-out`), inputs: { corpus: '/c' } }));
      const launch = {
        python: tools.python,
        stage,
        requestPath,
        cwd: work,
        deepspeed: DeepSpeedConfig.parse({ profile: 'cpu', master_addr: '127.0.0.1', master_port: await freePort(), hosts: [{ host: '127.0.0.1', slots: 1 }, { host: '127.0.0.2', slots: 1 }] }),
        stopFile: join(work, `${name}.stop`),
        stopGraceMs: 1000,
        env: { ...trainerEnv(process.env), PYTHONPATH: fake, PDSH_SSH_ARGS_APPEND: `-F ${hosts.sshConfig}` },
      };
      // A rank's command line; the runner's (`-m lawgpt_trainer.runner … --request`) holds the path too.
      const ranks = async () => (await findProcesses(`-m lawgpt_trainer ${stage} --request ${requestPath}`)).length;
      return {
        launch,
        started: () => waitFor('a rank on each host', async () => ((await ranks()) === 2 ? true : undefined), 90_000),
        stopped: () => waitFor('no rank left on either host', async () => ((await ranks()) === 0 ? true : undefined), 20_000),
        // Whatever a failure left, for the tests after this one.
        cleanUp: async () => {
          for (const pid of await findProcesses(requestPath)) {
            try {
              process.kill(pid, 'SIGKILL');
            } catch {
              // gone since
            }
          }
        },
      };
    }

    it('kills the ranks on every host at once when they outlast the grace period', { timeout: 150_000 }, async () => {
      // DeepSpeed's launchers would give each SIGTERM-deaf rank 30 s, one after another.
      const { launch, started, stopped, cleanUp } = await acrossHosts('hangs-across-hosts', 'pretrain');
      try {
        const abort = new AbortController();
        const exited = launchTrainer({ ...launch, signal: abort.signal, onEvent: () => undefined });
        await started();
        abort.abort();
        await exited;
        await stopped();
      } finally {
        await cleanUp();
      }
    });

    it('stops the ranks on every host when the worker that launched them dies', { timeout: 150_000 }, async () => {
      const { launch, started, stopped, cleanUp } = await acrossHosts('orphaned', 'eval');
      const script = join(work, 'worker.mts');
      await writeFile(script, `const { launchTrainer } = await import(${JSON.stringify(new URL('../activities/trainer-process.ts', import.meta.url).pathname)});\nvoid launchTrainer({ ...JSON.parse(process.argv[2]), onEvent: () => undefined });\n`);
      const worker = spawn(process.execPath, ['--import', 'tsx', script, JSON.stringify(launch)], { stdio: 'ignore' });
      try {
        await started();
        worker.kill('SIGKILL');
        await stopped();
      } finally {
        worker.kill('SIGKILL');
        await cleanUp();
      }
    });
  });
});
