// The histories of runs the tests make are kept under .state/test-output/histories/, in the
// format `temporal workflow show --output json` writes: after a deliberate change to the workflow,
// copy the ones tests/replay.test.ts should guard into tests/histories/.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { WorkflowHandle } from '@temporalio/client';
import { historyToJSON } from '@temporalio/common/lib/proto-utils.js';

export const HISTORIES_OUT = new URL('../../.state/test-output/histories/', import.meta.url).pathname;

export async function keepHistory(handle: WorkflowHandle, name: string): Promise<string> {
  await mkdir(HISTORIES_OUT, { recursive: true });
  const path = join(HISTORIES_OUT, `${name}.json`);
  await writeFile(path, historyToJSON(await handle.fetchHistory()));
  return path;
}
