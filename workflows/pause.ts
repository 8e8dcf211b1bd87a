// Pause and resume of a running pipeline, as Temporal Updates so the caller learns when they took
// effect. Pausing cancels the running stage (its trainer saves and hands over a checkpoint, so the
// GPUs are free once `pause` returns); resuming runs that stage again, which resumes from the
// checkpoint.
import { CancellationScope, condition, isCancellation, setHandler } from '@temporalio/workflow';
import type { PipelineStatus } from '../common/run.js';
import { pauseUpdate, resumeUpdate } from './definitions.js';

export interface PauseHooks {
  onPause(): void;
  onResume(): void;
  status(): PipelineStatus;
}

export function pauseControl(hooks: PauseHooks) {
  let paused = false;
  let running: CancellationScope | undefined;

  setHandler(
    pauseUpdate,
    async () => {
      paused = true;
      running?.cancel();
      await condition(() => running === undefined);
      hooks.onPause();
      return hooks.status();
    },
    {
      validator: () => {
        if (paused) throw new Error('the run is already paused');
      },
    },
  );
  setHandler(
    resumeUpdate,
    () => {
      paused = false;
      hooks.onResume();
      return hooks.status();
    },
    {
      validator: () => {
        if (!paused) throw new Error('the run is not paused');
      },
    },
  );

  return {
    /** Runs a stage; one stopped by a pause runs again after resume. */
    async run<T>(stage: () => Promise<T>): Promise<T> {
      for (;;) {
        await condition(() => !paused);
        const scope = new CancellationScope();
        running = scope;
        try {
          return await scope.run(stage);
        } catch (err) {
          const stoppedForPause = paused && isCancellation(err) && !CancellationScope.current().consideredCancelled;
          if (!stoppedForPause) throw err;
        } finally {
          running = undefined;
        }
      }
    },
  };
}
