// A real Temporal dev server (the installed CLI, never a download) on free ports, per test file.
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { STAGE_KEY } from '../../workflows/definitions.js';
import { tools } from './tools.js';

export function startTemporal(extraArgs: string[] = []): Promise<TestWorkflowEnvironment> {
  return TestWorkflowEnvironment.createLocal({
    server: {
      executable: { type: 'existing-path', path: tools.temporal },
      ip: '127.0.0.1',
      ui: false,
      searchAttributes: [STAGE_KEY],
      log: { format: 'pretty', level: 'warn' },
      extraArgs,
    },
  });
}

export const workflowsPath = new URL('../../workflows/index.ts', import.meta.url).pathname;
