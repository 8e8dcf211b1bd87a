// How a stage that trains under DeepSpeed is started: a hostfile and the `deepspeed` launcher's
// command line, from the stage config's `deepspeed` section. One launcher per run, on this worker;
// with several hosts it reaches the others itself (pdsh over ssh, with the ssh options in
// PDSH_SSH_ARGS_APPEND), which then need this worker's Python environment and work folder at the
// same paths, and get the environment in DEEPSPEED_ENV_FILE (see the README's "Several nodes").
import type { DeepSpeedConfig } from '../common/config.js';
import { SECRET_NAME } from '../common/settings.js';

/** DeepSpeed's hostfile format: one `<host> slots=<processes>` line per host. */
export function hostfile(deepspeed: DeepSpeedConfig): string {
  return deepspeed.hosts.map((h) => `${h.host} slots=${h.slots}`).join('\n') + '\n';
}

/** Arguments for `python` that start the launcher, which runs `python -m lawgpt_trainer <trainer...>` per slot (see trainerArgs). */
export function launcherArgs(deepspeed: DeepSpeedConfig, hostfilePath: string, trainer: string[]): string[] {
  return [
    '-m', 'deepspeed.launcher.runner',
    '--hostfile', hostfilePath,
    '--master_addr', deepspeed.master_addr,
    '--master_port', String(deepspeed.master_port),
    // DeepSpeed's own check sshes to the first host alone, with ssh's default options rather than
    // pdsh's; pdsh reaches every host itself, and one it cannot reach fails the stage with ssh's
    // error in the stderr tail.
    '--no_ssh_check',
    // Across hosts, pdsh would prefix every line of rank 0's stdout with its host: no event would
    // read as one. -N leaves the lines as they are.
    ...(deepspeed.hosts.length > 1 ? ['--launcher_args=-N'] : []),
    // Ranks read LOCAL_RANK from the environment; the trainer's CLI takes no --local_rank.
    '--no_local_rank',
    '--log_level', 'warning',
    '--module', 'lawgpt_trainer', ...trainer,
  ];
}

// Read by the launcher from its working folder (the stage's): pdsh exports it on every host.
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

/** Environment the launcher needs beyond the trainer's own. */
export function launcherEnv(deepspeed: DeepSpeedConfig): NodeJS.ProcessEnv {
  // DeepSpeed would guess the CPU accelerator on a machine without GPUs, and warn; the profile knows.
  return deepspeed.profile === 'cpu' ? { DS_ACCELERATOR: 'cpu' } : {};
}
