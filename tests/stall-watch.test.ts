// When a trainer counts as hung: silence after its first progress, in the stages that report as they go.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { TrainerEvent } from '../common/contract.js';
import { stallWatch } from '../activities/stall-watch.js';

const progress = (step: number): TrainerEvent => ({ event: 'progress', step, total_steps: 50 });
const log: TrainerEvent = { event: 'log', level: 'info', message: 'step 10: held-out loss 2.1' };
const MINUTE = 60_000;

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

describe('stallWatch', () => {
  it('aborts once a training stage has been silent for the window since its last event', () => {
    const watch = stallWatch('pretrain', 600);
    watch.heard(progress(10));
    vi.advanceTimersByTime(9 * MINUTE);
    // Any event counts as a sign of life: a log line, a checkpoint.
    watch.heard(log);
    vi.advanceTimersByTime(9 * MINUTE);
    watch.heard({ event: 'checkpoint', step: 20, path: 'checkpoints/checkpoint-20', save_seconds: 40 });
    vi.advanceTimersByTime(9 * MINUTE);
    watch.heard(progress(30));
    vi.advanceTimersByTime(10 * MINUTE - 1);
    expect(watch.signal.aborted).toBe(false);
    vi.advanceTimersByTime(1);
    expect(watch.signal.aborted).toBe(true);
    expect(watch.stalled()).toEqual({ seconds: 600, step: 30, totalSteps: 50 });
  });

  it('waits for the first progress: loading data and models takes as long as it takes', () => {
    const watch = stallWatch('sft', 600);
    watch.heard({ event: 'started', stage: 'sft', trainer_version: 'v', pid: 1 });
    watch.heard(log);
    vi.advanceTimersByTime(600 * MINUTE);
    expect(watch.signal.aborted).toBe(false);
    watch.heard(progress(0));
    vi.advanceTimersByTime(10 * MINUTE);
    expect(watch.stalled()).toMatchObject({ step: 0 });
  });

  it('leaves alone the stages that report once per phase', () => {
    for (const stage of ['base', 'vocab'] as const) {
      const watch = stallWatch(stage, 600);
      watch.heard(progress(1));
      vi.advanceTimersByTime(600 * MINUTE);
      expect(watch.signal.aborted).toBe(false);
    }
    const evaluating = stallWatch('eval', 600);
    evaluating.heard(progress(1));
    vi.advanceTimersByTime(10 * MINUTE);
    expect(evaluating.signal.aborted).toBe(true);
  });

  it("takes the default for a run whose config predates the setting", () => {
    const watch = stallWatch('pretrain', undefined);
    watch.heard(progress(1));
    vi.advanceTimersByTime(29 * MINUTE);
    expect(watch.signal.aborted).toBe(false);
    vi.advanceTimersByTime(MINUTE);
    expect(watch.stalled()).toEqual({ seconds: 1800, step: 1, totalSteps: 50 });
  });

  it('never aborts after the trainer has exited', () => {
    const watch = stallWatch('pretrain', 600);
    watch.heard(progress(50));
    watch.end();
    vi.advanceTimersByTime(600 * MINUTE);
    expect(watch.signal.aborted).toBe(false);
    expect(watch.stalled()).toBeUndefined();
  });
});
