// A pipeline worker, by LAWGPT_WORKER_ROLE: an orchestrator (the workflows and every activity, on
// LAWGPT_TASK_QUEUE) or a trainer (stages alone, on the queue runs name for them: a GPU machine).
// Scale out by starting more of either against the same Temporal server and queues.
import { writeFile } from 'node:fs/promises';
import { DefaultLogger, NativeConnection, Runtime, Worker } from '@temporalio/worker';
import { createActivities, workerOptions } from './activities/index.js';
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
    ...workerOptions(settings, createActivities({ s3, settings, temporal: client, trainerVersion: () => trainerVersion(settings.LAWGPT_PYTHON) })),
  });
  console.log(`${settings.LAWGPT_WORKER_ROLE} worker polling task queue '${settings.LAWGPT_TASK_QUEUE}' on ${settings.TEMPORAL_ADDRESS}, ${settings.LAWGPT_WORKER_SLOTS} stage(s) at a time`);
  const health = settings.LAWGPT_HEALTH_FILE;
  // A failed write only makes the container look unhealthy; it must not stop the worker.
  const touch = (file: string) => writeFile(file, new Date().toISOString()).catch((err: Error) => console.warn(`could not touch ${file}: ${err.message}`));
  const alive = health ? setInterval(() => worker.getState() === 'RUNNING' && void touch(health), 30_000) : undefined;
  if (health) await touch(health);
  // SIGTERM or SIGINT shut the worker down gracefully (the SDK's default signals): a running stage
  // stops its trainer, commits a final checkpoint and hands the stage back for another worker.
  await worker.run();
  clearInterval(alive);
  await client.connection.close();
  await connection.close();
  console.log('worker stopped');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
