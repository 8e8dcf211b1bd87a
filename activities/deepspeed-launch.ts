// How a stage that trains under DeepSpeed is started: a hostfile and the `deepspeed` launcher's
// command line, from the stage config's `deepspeed` section. One launcher per run, on this worker;
// with several hosts it reaches the others itself (pdsh over ssh), which then need this worker's
// Python environment and work folder at the same paths (see the README's "Several nodes").
import type { DeepSpeedConfig } from '../common/config.js';
import type { StageName } from '../common/stages.js';

/** DeepSpeed's hostfile format: one `<host> slots=<processes>` line per host. */
export function hostfile(deepspeed: DeepSpeedConfig): string {
  return deepspeed.hosts.map((h) => `${h.host} slots=${h.slots}`).join('\n') + '\n';
}

/** Arguments for `python` that start the launcher, which runs `python -m lawgpt_trainer` per slot. */
export function launcherArgs(deepspeed: DeepSpeedConfig, hostfilePath: string, stage: StageName, requestPath: string): string[] {
  return [
    '-m', 'deepspeed.launcher.runner',
    '--hostfile', hostfilePath,
    '--master_addr', deepspeed.master_addr,
    '--master_port', String(deepspeed.master_port),
    // One host runs on this machine without ssh; the check only matters across nodes.
    ...(deepspeed.hosts.length === 1 ? ['--no_ssh_check'] : []),
    // Ranks read LOCAL_RANK from the environment; the trainer's CLI takes no --local_rank.
    '--no_local_rank',
    '--log_level', 'warning',
    '--module', 'lawgpt_trainer', stage, '--request', requestPath,
  ];
}

/** Environment the launcher needs beyond the trainer's own. */
export function launcherEnv(deepspeed: DeepSpeedConfig): NodeJS.ProcessEnv {
  // DeepSpeed would guess the CPU accelerator on a machine without GPUs, and warn; the profile knows.
  return deepspeed.profile === 'cpu' ? { DS_ACCELERATOR: 'cpu' } : {};
}
