// The pace `follow` shows (tokens/s, ETA): taken between step changes it saw, never across a
// stage's start-up. The follow itself, against a real run: tests/cli.test.ts.
import { describe, expect, it } from 'vitest';
import { nextPace, type Pace } from '../cli/runs.js';

/** The paces after each (stage, step, second) seen, in order. */
function paces(seen: [string, number, number][]): (number | undefined)[] {
  let pace: Pace | undefined;
  return seen.map(([stage, step, second]) => (pace = nextPace(pace, stage, step, second * 1000)).perSecond);
}

describe('nextPace', () => {
  it("takes no pace from a stage's first step change, whose wait holds the start-up, and one from each change after", () => {
    // eval: 30 s loading models before its first step, then 277 steps in 2 s.
    expect(paces([['eval', 0, 0], ['eval', 0, 29], ['eval', 1, 30], ['eval', 278, 32]])).toEqual([undefined, undefined, undefined, 138.5]);
  });

  it('keeps the pace while the step stands still, and starts over in a new stage', () => {
    expect(paces([['pretrain', 3, 0], ['pretrain', 4, 1], ['pretrain', 6, 2], ['pretrain', 6, 3], ['sft', 1, 4], ['sft', 2, 5]])).toEqual([undefined, undefined, 2, 2, undefined, undefined]);
  });
});
