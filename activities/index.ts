// Every activity a pipeline worker runs, and what a worker of each role (LAWGPT_WORKER_ROLE) polls.
import { fileURLToPath } from 'node:url';
import type { WorkerOptions } from '@temporalio/worker';
import type { Settings } from '../common/settings.js';
import { createReportActivities } from './report.js';
import { createStageActivities, STAGE_WORKER_OPTIONS, type StageDeps } from './stage.js';

const WORKFLOWS_PATH = fileURLToPath(new URL('../workflows/index.ts', import.meta.url));

export function createActivities(deps: StageDeps) {
  return { ...createStageActivities(deps), ...createReportActivities(deps) };
}

/**
 * A worker's task queue, workflows and activities by role: an orchestrator runs the workflows and
 * every activity; a trainer runs stages alone (`runStage`), `LAWGPT_WORKER_SLOTS` at a time.
 */
export function workerOptions(
  settings: Pick<Settings, 'LAWGPT_TASK_QUEUE' | 'LAWGPT_WORKER_ROLE' | 'LAWGPT_WORKER_SLOTS'>,
  activities: ReturnType<typeof createActivities>,
): Pick<WorkerOptions, 'taskQueue' | 'workflowsPath' | 'activities' | 'maxConcurrentActivityTaskExecutions' | 'maxHeartbeatThrottleInterval'> {
  const orchestrator = settings.LAWGPT_WORKER_ROLE === 'orchestrator';
  return {
    taskQueue: settings.LAWGPT_TASK_QUEUE,
    ...(orchestrator ? { workflowsPath: WORKFLOWS_PATH, activities } : { activities: { runStage: activities.runStage } }),
    ...STAGE_WORKER_OPTIONS,
    maxConcurrentActivityTaskExecutions: settings.LAWGPT_WORKER_SLOTS,
  };
}
