// The hostfile and launcher command line a DeepSpeed stage starts with, read back by DeepSpeed's
// own parsers (the installed launcher), so a format drift on either side fails here.
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeepSpeedConfig } from '../common/config.js';
import { trainerArgs } from '../common/contract.js';
import { hostfile, launcherArgs, launcherEnv, remoteRankEnv } from '../activities/deepspeed-launch.js';
import { tools } from './helpers/tools.js';

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'lawgpt-ds-launch-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** Runs Python with the installed DeepSpeed and returns what the snippet prints as JSON. */
async function deepspeedSays(snippet: string, ...args: string[]): Promise<unknown> {
  const { stdout } = await promisify(execFile)(tools.python, ['-c', snippet, ...args], { env: { ...process.env, DS_ACCELERATOR: 'cpu' } });
  return JSON.parse(stdout.trim().split('\n').at(-1)!);
}

const twoNodes = DeepSpeedConfig.parse({
  profile: 'v100',
  hosts: [
    { host: 'gpu-node-1', slots: 8 },
    { host: 'gpu-node-2', slots: 8 },
  ],
  master_addr: 'gpu-node-1',
  master_port: 29600,
});

describe('DeepSpeed launch', () => {
  it('writes a hostfile the launcher reads as the configured hosts and slots', async () => {
    expect(hostfile(twoNodes)).toBe('gpu-node-1 slots=8\ngpu-node-2 slots=8\n');
    const path = join(work, 'hostfile');
    await writeFile(path, hostfile(twoNodes));
    const pool = await deepspeedSays(
      'import json, sys; from deepspeed.launcher.runner import fetch_hostfile; print(json.dumps(fetch_hostfile(sys.argv[1])))',
      path,
    );
    expect(pool).toEqual({ 'gpu-node-1': 8, 'gpu-node-2': 8 });
  });

  it('builds a command line the launcher parses into one module launch on the hostfile', async () => {
    const args = launcherArgs(twoNodes, '/work/hostfile', trainerArgs('pretrain', '/work/request.json', true));
    expect(args.slice(0, 2)).toEqual(['-m', 'deepspeed.launcher.runner']);
    const parsed = await deepspeedSays(
      'import json, sys; from deepspeed.launcher.runner import parse_args; a = parse_args(sys.argv[1:]); ' +
        'print(json.dumps([a.hostfile, a.master_addr, a.master_port, a.module, a.no_local_rank, a.no_ssh_check, a.launcher, a.launcher_args, a.user_script, a.user_args]))',
      ...args.slice(2),
    );
    // pdsh without its "host: " prefix, so that rank 0's events reach us as they were written.
    expect(parsed).toEqual(['/work/hostfile', 'gpu-node-1', 29600, true, true, true, 'pdsh', '-N', 'lawgpt_trainer', ['pretrain', '--request', '/work/request.json', '--wait-for-request']]);
    expect(launcherArgs(DeepSpeedConfig.parse({ profile: 'cpu' }), 'h', trainerArgs('pretrain', 'r')).join(' ')).not.toContain('launcher_args');
  });

  it('names the CPU accelerator for the cpu profile', () => {
    expect(launcherEnv(DeepSpeedConfig.parse({ profile: 'cpu' }))).toEqual({ DS_ACCELERATOR: 'cpu' });
    expect(launcherEnv(twoNodes)).toEqual({});
  });

  it('gives the ranks on other hosts the runtime environment pdsh would not carry, and no more', async () => {
    const lines = remoteRankEnv({ DS_ACCELERATOR: 'cpu', TORCH_EXTENSIONS_DIR: '/cache/ops', HF_HUB_OFFLINE: '1', HF_TOKEN: 'hf_x', PYTHONUNBUFFERED: '1', PATH: '/bin', LAWGPT_SUPERVISOR_PID: '42', AWS_SECRET_ACCESS_KEY: 's' });
    expect(lines).toBe('DS_ACCELERATOR=cpu\nTORCH_EXTENSIONS_DIR=/cache/ops\nHF_HUB_OFFLINE=1\n');
    // Read back as the launcher reads it, into the exports of the command pdsh runs on each host.
    const path = join(work, '.deepspeed_env');
    await writeFile(path, lines);
    const exports = await deepspeedSays(
      'import json, sys; from deepspeed.launcher.multinode_runner import PDSHRunner\n' +
        'class A: user_args, user_script = [], "m"\n' +
        'r = PDSHRunner(A(), "")\n' +
        'for line in open(sys.argv[1]): k, v = line.split("=", 1); r.add_export(k, v)\n' +
        'print(json.dumps(r.exports))',
      path,
    );
    expect(exports).toEqual({ DS_ACCELERATOR: 'cpu', TORCH_EXTENSIONS_DIR: '/cache/ops', HF_HUB_OFFLINE: '1' });
  });
});
