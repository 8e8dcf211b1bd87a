// How a DeepSpeed stage starts its ranks, read back by DeepSpeed's own parsers and launchers (the
// installed ones), so a format drift on either side fails here; and each start that skips a
// launcher layer gives the ranks what that layer would have.
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeepSpeedConfig } from '../common/config.js';
import { trainerArgs } from '../common/contract.js';
import { deepspeedStart, hostfile, remoteRankEnv, trainerStart } from '../activities/deepspeed-launch.js';
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
  it('writes a hostfile the runner reads as the configured hosts and slots', async () => {
    expect(hostfile(twoNodes)).toBe('gpu-node-1 slots=8\ngpu-node-2 slots=8\n');
    const path = join(work, 'hostfile');
    await writeFile(path, hostfile(twoNodes));
    const pool = await deepspeedSays(
      'import json, sys; from deepspeed.launcher.runner import fetch_hostfile; print(json.dumps(fetch_hostfile(sys.argv[1])))',
      path,
    );
    expect(pool).toEqual({ 'gpu-node-1': 8, 'gpu-node-2': 8 });
  });

  it('starts several hosts through the runner, which parses its command line into one module launch on the hostfile', async () => {
    const start = deepspeedStart(twoNodes, trainerArgs('pretrain', '/work/request.json', true), { HF_HUB_OFFLINE: '1', AWS_SECRET_ACCESS_KEY: 's' });
    expect(start.args.slice(0, 2)).toEqual(['-m', 'lawgpt_trainer.runner']);
    expect(start.files).toEqual({ hostfile: hostfile(twoNodes), '.deepspeed_env': 'HF_HUB_OFFLINE=1\n' });
    const parsed = await deepspeedSays(
      'import json, sys; from deepspeed.launcher.runner import parse_args; a = parse_args(sys.argv[1:]); ' +
        'print(json.dumps([a.hostfile, a.master_addr, a.master_port, a.module, a.no_local_rank, a.no_ssh_check, a.launcher, a.launcher_args, a.user_script, a.user_args]))',
      ...start.args.slice(2),
    );
    // pdsh without its "host: " prefix, so that rank 0's events reach us as they were written.
    expect(parsed).toEqual(['hostfile', 'gpu-node-1', 29600, true, true, true, 'pdsh', '-N', 'lawgpt_trainer', ['pretrain', '--request', '/work/request.json', '--wait-for-request']]);
  });

  it('starts one host through the per-node launcher the runner would start there, with the same world', async () => {
    const oneHost = DeepSpeedConfig.parse({ profile: 'cpu', hosts: [{ host: 'localhost', slots: 2 }], master_port: 29601 });
    const start = deepspeedStart(oneHost, trainerArgs('pretrain', '/work/request.json'), {});
    expect(start.args.slice(0, 3)).toEqual(['-u', '-m', 'deepspeed.launcher.launch']);
    expect(start.files).toEqual({});
    expect(start.env).toEqual({ DS_ACCELERATOR: 'cpu' });
    const path = join(work, 'one-host');
    await writeFile(path, hostfile(oneHost));
    const [parsed, runners] = (await deepspeedSays(
      'import base64, json, sys\nfrom deepspeed.launcher import launch, runner\n' +
        'hostfile_path, sys.argv = sys.argv[1], ["launch", *sys.argv[2:]]\n' +
        'a = launch.parse_args()\n' +
        'world = json.loads(base64.urlsafe_b64decode(a.world_info))\n' +
        'theirs = runner.parse_inclusion_exclusion(runner.fetch_hostfile(hostfile_path), "", "")\n' +
        'print(json.dumps([[world, a.node_rank, a.master_addr, a.master_port, a.module, a.no_local_rank, a.training_script, a.training_script_args], theirs]))',
      path,
      ...start.args.slice(3),
    )) as [unknown[], unknown];
    expect(runners).toEqual({ localhost: [0, 1] });
    expect(parsed).toEqual([runners, 0, '127.0.0.1', 29601, true, true, 'lawgpt_trainer', ['pretrain', '--request', '/work/request.json']]);
  });

  it('starts one slot as the trainer alone, with the variables the per-node launcher gives its one rank', async () => {
    const oneSlot = DeepSpeedConfig.parse({ profile: 'cpu', hosts: [{ host: 'localhost', slots: 1 }], master_port: 29602 });
    const start = deepspeedStart(oneSlot, trainerArgs('pretrain', '/work/request.json'), {});
    expect(start.args).toEqual(['-m', 'lawgpt_trainer', 'pretrain', '--request', '/work/request.json']);
    expect(start.files).toEqual({});
    // The per-node launcher as the runner starts it for this hostfile, its rank printing its environment.
    const path = join(work, 'one-slot');
    await writeFile(path, hostfile(oneSlot));
    const worldInfo = await deepspeedSays(
      'import json, sys; from deepspeed.launcher import runner; print(json.dumps(runner.encode_world_info(runner.parse_inclusion_exclusion(runner.fetch_hostfile(sys.argv[1]), "", ""))))',
      path,
    );
    // Each rank prints its environment once it has imported DeepSpeed, as the trainer's ranks do.
    const rank = ['-c', 'import json, os, deepspeed; print(json.dumps(dict(os.environ)))'];
    const launched = ['-m', 'deepspeed.launcher.launch', `--world_info=${worldInfo}`, '--master_addr=127.0.0.1', '--master_port=29602', '--no_python', '--no_local_rank', '--log_level=warning', tools.python, ...rank];
    const environment = async (args: string[], env: NodeJS.ProcessEnv) => {
      const { stdout } = await promisify(execFile)(tools.python, args, { env: { ...process.env, ...env } });
      return JSON.parse(stdout.trim().split('\n').at(-1)!) as Record<string, string>;
    };
    const [underLauncher, alone] = await Promise.all([environment(launched, { DS_ACCELERATOR: 'cpu' }), environment(rank, start.env)]);
    expect(alone).toEqual(underLauncher);
    expect(alone).toMatchObject({ RANK: '0', WORLD_SIZE: '1', MASTER_PORT: '29602' });
  });

  it('starts a stage without DeepSpeed as one process on one GPU, the first the worker may use', () => {
    const args = trainerArgs('sft', '/work/request.json');
    expect(trainerStart(undefined, args, {})).toEqual({ args: ['-m', 'lawgpt_trainer', ...args], env: { CUDA_VISIBLE_DEVICES: '0' }, files: {} });
    expect(trainerStart(undefined, args, { CUDA_VISIBLE_DEVICES: '4,5,6,7' }).env).toEqual({ CUDA_VISIBLE_DEVICES: '4' });
    expect(trainerStart(undefined, args, { CUDA_VISIBLE_DEVICES: 'GPU-8f3a, GPU-77c1' }).env).toEqual({ CUDA_VISIBLE_DEVICES: 'GPU-8f3a' });
    expect(trainerStart(undefined, args, { CUDA_VISIBLE_DEVICES: ',3' }).env).toEqual({ CUDA_VISIBLE_DEVICES: '3' });
    // A worker kept off the GPUs keeps its trainer off them.
    expect(trainerStart(undefined, args, { CUDA_VISIBLE_DEVICES: '' }).env).toEqual({ CUDA_VISIBLE_DEVICES: '' });
    // DeepSpeed in one slot takes the same GPU.
    const oneSlot = DeepSpeedConfig.parse({ profile: 'v100', hosts: [{ host: 'localhost', slots: 1 }] });
    expect(trainerStart(oneSlot, args, { CUDA_VISIBLE_DEVICES: '4,5,6,7' }).env.CUDA_VISIBLE_DEVICES).toBe('4');
  });

  it('names the CPU accelerator for the cpu profile alone', () => {
    expect(deepspeedStart(DeepSpeedConfig.parse({ profile: 'cpu' }), [], {}).env).toEqual({ DS_ACCELERATOR: 'cpu' });
    expect(deepspeedStart(twoNodes, [], {}).env).toEqual({});
    expect(deepspeedStart(twoNodes, [], { DS_ACCELERATOR: 'cuda' }).files['.deepspeed_env']).toBe('DS_ACCELERATOR=cuda\n');
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
