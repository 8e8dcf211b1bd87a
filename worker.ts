// A pipeline worker: runs workflows and stages from the task queue. Scale out by starting more of
// these (on GPU machines) against the same Temporal server and task queue.
import { fileURLToPath } from 'node:url';
import { NativeConnection, Worker } from '@temporalio/worker';
import { createStageActivities, STAGE_WORKER_OPTIONS } from './activities/stage.js';
import { createS3Client } from './activities/s3.js';
import { trainerVersion } from './activities/trainer-process.js';
import { connectTemporal, loadSettings } from './common/settings.js';

async function main() {
  const settings = loadSettings();
  const connection = await NativeConnection.connect({ address: settings.TEMPORAL_ADDRESS });
  const client = await connectTemporal(settings);
  const worker = await Worker.create({
    connection,
    namespace: settings.TEMPORAL_NAMESPACE,
    taskQueue: settings.LAWGPT_TASK_QUEUE,
    workflowsPath: fileURLToPath(new URL('./workflows/index.ts', import.meta.url)),
    activities: createStageActivities({
      s3: createS3Client(settings),
      settings,
      temporal: client,
      trainerVersion: () => trainerVersion(settings.LAWGPT_PYTHON),
    }),
    ...STAGE_WORKER_OPTIONS,
  });
  console.log(`worker polling task queue '${settings.LAWGPT_TASK_QUEUE}' on ${settings.TEMPORAL_ADDRESS}`);
  await worker.run();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
