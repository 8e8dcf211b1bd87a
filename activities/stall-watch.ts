// Notices a trainer that has hung: alive, so the worker heartbeats on, but reporting nothing (a
// kernel that never returns on a failing GPU, a dead network filesystem, a deadlocked data loader).
// Left alone it would hold its GPUs until the stage timeout, a week in configs/lawgpt.json.
import { RuntimeConfig } from '../common/config.js';
import type { TrainerEvent } from '../common/contract.js';
import type { StageName } from '../common/stages.js';

// Stages that report as they go: every logging_steps optimizer steps and every checkpoint
// (pretrain, sft), every model, exam batch or answer scored (eval). base and vocab report once per
// phase, and vocab's may take long on a large corpus, for no GPU.
const WATCHED: readonly StageName[] = ['pretrain', 'sft', 'eval'];

export interface Stall {
  seconds: number;
  /** The last progress the trainer reported. */
  step: number;
  totalSteps: number;
}

// A run started before runtime.stall_timeout_seconds existed carries none in its config.
const DEFAULT_SECONDS = RuntimeConfig.parse({}).stall_timeout_seconds;

/**
 * Aborts `signal` when a watched stage's trainer, once it has reported progress (before that it
 * loads data and models, for as long as they take), then reports nothing at all for `seconds`.
 */
export function stallWatch(stage: StageName, configured: number | undefined) {
  const seconds = configured ?? DEFAULT_SECONDS;
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let last: { step: number; totalSteps: number } | undefined;
  let stall: Stall | undefined;

  return {
    signal: controller.signal,
    heard(event: TrainerEvent) {
      if (event.event === 'progress') last = { step: event.step, totalSteps: event.total_steps };
      if (!last || !WATCHED.includes(stage) || stall) return;
      clearTimeout(timer);
      timer = setTimeout(() => {
        stall = { seconds, ...last! };
        controller.abort();
      }, seconds * 1000);
    },
    /** The trainer has exited: no stall can follow. */
    end() {
      clearTimeout(timer);
    },
    stalled: (): Stall | undefined => stall,
  };
}
