// Histories recorded from real runs (tests/histories/*.json, `temporal workflow show --output json`)
// replayed against the current workflow code: a change that would break running workflows fails here.
// Record a new one after a deliberate, versioned change to the workflow: the tests keep the
// histories of the runs they make (a worker shutdown, a missed gate) in .state/test-output/histories/.
import { readdirSync, readFileSync } from 'node:fs';
import { Worker } from '@temporalio/worker';
import { describe, expect, it } from 'vitest';
import { workflowsPath } from './helpers/temporal.js';

const dir = new URL('./histories/', import.meta.url);
const histories = readdirSync(dir).filter((f) => f.endsWith('.json'));

describe('replay', () => {
  it('has recorded histories to replay', () => {
    expect(histories.length).toBeGreaterThan(0);
  });

  it.each(histories)('%s replays without nondeterminism', async (file) => {
    const history = JSON.parse(readFileSync(new URL(file, dir), 'utf8'));
    await expect(Worker.runReplayHistory({ workflowsPath, replayName: file }, history)).resolves.toBeUndefined();
  });
});
