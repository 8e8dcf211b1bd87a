// How a stage that trains under DeepSpeed starts its processes, from the stage config's `deepspeed`
// section. Every launcher layer imports DeepSpeed and torch before the ranks start (4-6 s each on
// a GPU machine, 8-12 s of a 1.1B launch on an H100 for the two), so a run takes only the layers
// its hosts need, each giving the ranks the environment DeepSpeed's full launch would:
//   several hosts: DeepSpeed's runner (in lawgpt_trainer.runner, which stops the ranks of every
//     host should this worker die), one per run on this worker, which reaches the others itself
//     (pdsh over ssh, with the ssh options in PDSH_SSH_ARGS_APPEND); they then need this worker's
//     Python environment and work folder at the same paths, and get the environment in
//     DEEPSPEED_ENV_FILE (see the README's "Several nodes");
//   one host: the per-node launcher (`deepspeed.launcher.launch`) that the runner would start here
//     itself, which starts the ranks and stops them all when one fails;
//   one slot: the trainer alone, with the rank variables that per-node launcher would set.
import type { DeepSpeedConfig } from '../common/config.js';
import { SECRET_NAME } from '../common/settings.js';

/** DeepSpeed's hostfile format: one `<host> slots=<processes>` line per host. */
export function hostfile(deepspeed: DeepSpeedConfig): string {
  return deepspeed.hosts.map((h) => `${h.host} slots=${h.slots}`).join('\n') + '\n';
}

// Read by the runner from its working folder (the stage's): pdsh exports it on every host.
export const DEEPSPEED_ENV_FILE = '.deepspeed_env';
// pdsh carries only PYTHON* (and the accelerator's NCCL*) variables to the other hosts; the ranks
// there need these of the trainer's environment too. Never the supervisor's pid: it means nothing
// on another host.
const FOR_REMOTE_RANKS = /^(DS_\w+|TORCH\w*|HF_\w+|TRANSFORMERS_\w+|OMP_\w+|MKL_\w+|TOKENIZERS_PARALLELISM|CUDA\w*|NCCL\w*|LD_LIBRARY_PATH)$/;

/** DEEPSPEED_ENV_FILE's lines (`NAME=value`) for the ranks on other hosts, from the trainer's environment. */
export function remoteRankEnv(env: NodeJS.ProcessEnv): string {
  const lines = Object.entries(env).filter(([name, value]) => FOR_REMOTE_RANKS.test(name) && !SECRET_NAME.test(name) && value !== undefined && !value.includes('\n'));
  return lines.map(([name, value]) => `${name}=${value}\n`).join('');
}

/** How to start a stage's trainer processes in its working folder. */
export interface TrainerStart {
  /** Arguments for `python`; each rank runs `python -m lawgpt_trainer <trainer...>` (see trainerArgs). */
  args: string[];
  /** Added to the trainer's environment. */
  env: NodeJS.ProcessEnv;
  /** Written into the working folder, by name, before the start. */
  files: Record<string, string>;
}

const HOSTFILE = 'hostfile';

const alone = (trainer: string[]) => ['-m', 'lawgpt_trainer', ...trainer];

/** The start of a stage's `trainer` command with `trainerEnv`: one plain process without a `deepspeed` section, else deepspeedStart. */
export function trainerStart(deepspeed: DeepSpeedConfig | undefined, trainer: string[], trainerEnv: NodeJS.ProcessEnv): TrainerStart {
  return deepspeed ? deepspeedStart(deepspeed, trainer, trainerEnv) : { args: alone(trainer), env: oneGpu(trainerEnv), files: {} };
}

/**
 * One process sees one GPU: the first the worker may use (the first entry of its
 * CUDA_VISIBLE_DEVICES, else device 0; none where it allows none). Shown every GPU of an 8-GPU
 * machine, transformers' Trainer would wrap sft's model in DataParallel over all of them,
 * multiplying its batch by 8 and copying the model to each at every step. Several slots on one
 * host are DeepSpeed's launcher's to number: devices 0 to slots - 1.
 */
function oneGpu(trainerEnv: NodeJS.ProcessEnv): { CUDA_VISIBLE_DEVICES: string } {
  const allowed = trainerEnv.CUDA_VISIBLE_DEVICES;
  if (allowed === undefined) return { CUDA_VISIBLE_DEVICES: '0' };
  return { CUDA_VISIBLE_DEVICES: allowed.split(',').map((d) => d.trim()).find((d) => d) ?? '' };
}

/** The start for `deepspeed`'s hosts, running `trainer` in each rank with `trainerEnv` (see the top of this file). */
export function deepspeedStart(deepspeed: DeepSpeedConfig, trainer: string[], trainerEnv: NodeJS.ProcessEnv): TrainerStart {
  // DeepSpeed would guess the CPU accelerator on a machine without GPUs, and warn; the profile knows.
  const env: NodeJS.ProcessEnv = deepspeed.profile === 'cpu' ? { DS_ACCELERATOR: 'cpu' } : {};
  const [first] = deepspeed.hosts;
  if (deepspeed.hosts.length > 1) {
    const files = { [HOSTFILE]: hostfile(deepspeed), [DEEPSPEED_ENV_FILE]: remoteRankEnv({ ...trainerEnv, ...env }) };
    return { args: runnerArgs(deepspeed, trainer), env, files };
  }
  // The runner's own numbering on one host: its slots are devices 0 to slots - 1.
  const devices = Array.from({ length: first.slots }, (_, i) => i);
  if (first.slots > 1) return { args: nodeLauncherArgs(deepspeed, { [first.host]: devices }, trainer), env, files: {} };
  const rank = { RANK: '0', LOCAL_RANK: '0', WORLD_SIZE: '1', LOCAL_SIZE: '1', CROSS_RANK: '0', CROSS_SIZE: '1', ...oneGpu(trainerEnv) };
  return { args: alone(trainer), env: { ...env, ...rank, MASTER_ADDR: deepspeed.master_addr, MASTER_PORT: String(deepspeed.master_port) }, files: {} };
}

/**
 * pdsh's arguments to kill a stage's ranks on every host at once, and their launchers (one still
 * starting would start ranks after). Across hosts the ranks are children of each host's sshd, out
 * of the worker's reach, and DeepSpeed's launchers stop theirs one at a time, 30 s each. The
 * pattern matches their command lines (`… lawgpt_trainer <stage> --request <path>`) and not that
 * of the shell running pkill, whose `[a-z]+` stands where the stage would.
 */
export function killRanksArgs(deepspeed: DeepSpeedConfig, requestPath: string): string[] {
  const path = requestPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return ['-R', 'ssh', '-w', deepspeed.hosts.map((h) => h.host).join(','), `pkill -KILL -f -- 'lawgpt_trainer [a-z]+ --request ${path}'`];
}

function runnerArgs(deepspeed: DeepSpeedConfig, trainer: string[]): string[] {
  return [
    // DeepSpeed's runner, stopping every host's ranks should the worker die (see runner.py).
    '-m', 'lawgpt_trainer.runner',
    '--hostfile', HOSTFILE,
    '--master_addr', deepspeed.master_addr,
    `--master_port=${deepspeed.master_port}`,
    // DeepSpeed's own check sshes to the first host alone, with ssh's default options rather than
    // pdsh's; pdsh reaches every host itself, and one it cannot reach fails the stage with ssh's
    // error in the stderr tail.
    '--no_ssh_check',
    // pdsh would prefix every line of rank 0's stdout with its host: no event would read as one.
    // -N leaves the lines as they are.
    '--launcher_args=-N',
    // Ranks read LOCAL_RANK from the environment; the trainer's CLI takes no --local_rank.
    '--no_local_rank',
    '--log_level', 'warning',
    '--module', 'lawgpt_trainer', ...trainer,
  ];
}

function nodeLauncherArgs(deepspeed: DeepSpeedConfig, devicesByHost: Record<string, number[]>, trainer: string[]): string[] {
  // The runner hands the hosts and their devices over as JSON in URL-safe base64, padded as
  // Python's decoder insists.
  const worldInfo = Buffer.from(JSON.stringify(devicesByHost)).toString('base64').replaceAll('+', '-').replaceAll('/', '_');
  return [
    '-u', '-m', 'deepspeed.launcher.launch',
    `--world_info=${worldInfo}`,
    `--master_addr=${deepspeed.master_addr}`,
    `--master_port=${deepspeed.master_port}`,
    '--no_local_rank',
    '--log_level=warning',
    '--module', 'lawgpt_trainer', ...trainer,
  ];
}
