// A stage that trains for weeks would run one execution into Temporal's limits: the server refuses
// its signals past history.maximumSignalsPerExecution (10,000 by default), so its progress reports
// (and with them the checkpoints that renew its attempts) stop reaching the workflow, and ends it
// once its history passes 51,200 events. So once a stage has sent
// `runtime.progress_reports_per_execution` reports it is stopped as a pause stops it (its trainer
// commits a checkpoint), and the run continues as new, where the stage goes on from that checkpoint.
import { CancellationScope, condition, isCancellation } from '@temporalio/workflow';

export function rolloverControl(limit: number) {
  let reports = 0;
  return {
    /** A progress report reached this execution (a stale one counts too: the server counted it). */
    reported() {
      reports++;
    },
    /** Whether this execution has heard all the reports it should. */
    due: () => reports >= limit,
    /** Runs a stage; undefined where it was stopped to go on in a fresh execution. */
    async run<T>(stage: () => Promise<T>): Promise<T | undefined> {
      const scope = new CancellationScope();
      let ended = false;
      let stopped = false;
      // A cancel of the whole run rejects this wait as well: the stage's own cancel says so.
      void condition(() => ended || reports >= limit).then(
        () => {
          if (ended) return;
          stopped = true;
          scope.cancel();
        },
        () => undefined,
      );
      try {
        return await scope.run(stage);
      } catch (err) {
        if (stopped && isCancellation(err)) return undefined;
        throw err;
      } finally {
        ended = true;
      }
    },
  };
}
