// A stage that trains for weeks would run one execution into Temporal's limits: the server refuses
// its signals past history.maximumSignalsPerExecution (10,000 by default), so its progress reports
// (and with them the checkpoints that renew its attempts) stop reaching the workflow, and ends it
// once its history passes 51,200 events. So once a stage has sent
// `runtime.progress_reports_per_execution` reports it is stopped as a pause stops it (its trainer
// commits a checkpoint), and the run continues as new, where the stage goes on from that checkpoint.
// A stage that would start with less than half of them left starts in a fresh execution instead.
// Histories recorded before this rule (no `progress-rollover` marker where it would act) replay
// without it.
import { CancellationScope, condition, isCancellation, patched } from '@temporalio/workflow';

const PATCH = 'progress-rollover';

export function rolloverControl(limit: number) {
  let reports = 0;
  return {
    /** A progress report reached this execution (a stale one counts too: the server counted it). */
    reported() {
      reports++;
    },
    /** Whether a stage starting now should start in a fresh execution. */
    dueBeforeStage: () => reports >= limit / 2 && patched(PATCH),
    /** Runs a stage; undefined where it was stopped to go on in a fresh execution. */
    async run<T>(stage: () => Promise<T>): Promise<T | undefined> {
      const scope = new CancellationScope();
      let ended = false;
      let stopped = false;
      // A cancel of the whole run rejects this wait as well: the stage's own cancel says so.
      void condition(() => ended || reports >= limit).then(
        () => {
          if (ended || !patched(PATCH)) return;
          stopped = true;
          scope.cancel();
        },
        () => undefined,
      );
      try {
        return await scope.run(stage);
      } catch (err) {
        // Stopped here, but not if the whole run was cancelled meanwhile: that cancel stands.
        if (stopped && isCancellation(err) && !CancellationScope.current().consideredCancelled) return undefined;
        throw err;
      } finally {
        ended = true;
      }
    },
  };
}
