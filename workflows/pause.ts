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

export function pauseControl(hooks: PauseHooks, startPaused = false) {
  let paused = startPaused;
  // True from a pause request until the running stage has stopped: resume waits for that.
  let stopping = false;
  let running: CancellationScope | undefined;
  const stoppedForPause = new WeakSet<CancellationScope>();

  setHandler(
    pauseUpdate,
    async () => {
      paused = true;
      stopping = true;
      if (running) {
        stoppedForPause.add(running);
        running.cancel();
      }
      await condition(() => running === undefined);
      stopping = false;
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
        if (stopping) throw new Error('the run is still pausing: its stage is saving a checkpoint');
      },
    },
  );

  return {
    isPaused: () => paused,
    /** Runs a stage; one stopped by a pause runs again after resume. */
    async run<T>(stage: () => Promise<T>): Promise<T> {
      for (;;) {
        await condition(() => !paused);
        const scope = new CancellationScope();
        running = scope;
        try {
          return await scope.run(stage);
        } catch (err) {
          if (!(isCancellation(err) && stoppedForPause.has(scope))) throw err;
        } finally {
          running = undefined;
        }
      }
    },
  };
}
