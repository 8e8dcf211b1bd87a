// The config's `gates`: bounds on a stage's metrics, checked by the workflow after the stage, so a
// model that misses them never reaches the next phase. Pure, for use inside the workflow.
import type { Gate } from './config.js';
import type { StageName } from './stages.js';

/** One message per gate of `stage` that `metrics` miss; a gate on a metric the stage did not report fails too. */
export function gateFailures(stage: StageName, metrics: Record<string, number>, gates: Record<string, Gate> = {}): string[] {
  const failures: string[] = [];
  for (const [metric, gate] of Object.entries(gates)) {
    const value = metrics[metric];
    if (value === undefined) {
      failures.push(`${stage} reported no ${metric} (it reported ${Object.keys(metrics).sort().join(', ') || 'no metrics'})`);
    } else if (gate.min !== undefined && value < gate.min) {
      failures.push(`${stage}.${metric} is ${value}, below the gate's min ${gate.min}`);
    } else if (gate.max !== undefined && value > gate.max) {
      failures.push(`${stage}.${metric} is ${value}, above the gate's max ${gate.max}`);
    }
  }
  return failures;
}
