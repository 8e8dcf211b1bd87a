// A pipeline worker: runs workflows and stages from the task queue. Scale out by starting more of
// these (on GPU machines) against the same Temporal server and task queue.
import { fileURLToPath } from 'node:url';
import { DefaultLogger, NativeConnection, Runtime, Worker } from '@temporalio/worker';
import { createStageActivities, STAGE_WORKER_OPTIONS } from './activities/stage.js';
import { createS3Client, credentialsRefusal } from './activities/s3.js';
import { trainerVersion } from './activities/trainer-process.js';
import { connectTemporal, loadSettings, temporalConnection } from './common/settings.js';

async function main() {
  const settings = loadSettings();
  Runtime.install({ logger: new DefaultLogger(settings.LAWGPT_LOG_LEVEL) });
  const s3 = createS3Client(settings);
  // Wrong credentials are said once, here, instead of as a failed stage later; an S3 that is only
  // unreachable now may be back by the time a stage needs it.
  const refusal = await credentialsRefusal(s3).catch((err: Error) => console.warn(`S3 is not reachable yet (${err.name}); stages will retry it`));
  if (refusal) {
    console.error(refusal);
    process.exit(1);
  }
  const connection = await NativeConnection.connect(temporalConnection(settings));
  const client = await connectTemporal(settings);
  const worker = await Worker.create({
    connection,
    namespace: settings.TEMPORAL_NAMESPACE,
    taskQueue: settings.LAWGPT_TASK_QUEUE,
    workflowsPath: fileURLToPath(new URL('./workflows/index.ts', import.meta.url)),
    activities: createStageActivities({
      s3,
      settings,
      temporal: client,
      trainerVersion: () => trainerVersion(settings.LAWGPT_PYTHON),
    }),
    ...STAGE_WORKER_OPTIONS,
  });
  console.log(`worker polling task queue '${settings.LAWGPT_TASK_QUEUE}' on ${settings.TEMPORAL_ADDRESS}`);
  // SIGTERM or SIGINT shut the worker down gracefully (the SDK's default signals): a running stage
  // stops its trainer, commits a final checkpoint and hands the stage back for another worker.
  await worker.run();
  await client.connection.close();
  await connection.close();
  console.log('worker stopped');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
