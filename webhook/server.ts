// `npm run webhook`: starts a pipeline run when a corpus lands in a watched S3 folder (see
// handler.ts for what it answers, triggers.ts for what it watches). Settings from the environment:
// LAWGPT_WEBHOOK_HOST, LAWGPT_WEBHOOK_PORT, LAWGPT_WEBHOOK_TRIGGERS, LAWGPT_WEBHOOK_TOKEN, and
// Temporal's as for the worker.
import { connectTemporal, loadSettings } from '../common/settings.js';
import { createWebhook } from './handler.js';
import { loadTriggers, TriggersError } from './triggers.js';

const MIN_TOKEN_CHARS = 16;

async function main() {
  const settings = loadSettings();
  const token = process.env.LAWGPT_WEBHOOK_TOKEN ?? '';
  if (token.length < MIN_TOKEN_CHARS) throw new Error(`LAWGPT_WEBHOOK_TOKEN must be set, at least ${MIN_TOKEN_CHARS} characters (the stack generates one into .state/credentials.env)`);
  const triggers = loadTriggers(settings.LAWGPT_WEBHOOK_TRIGGERS);
  const temporal = await connectTemporal(settings);
  const server = createWebhook({ temporal, taskQueue: settings.LAWGPT_TASK_QUEUE, token, triggers });
  server.listen(settings.LAWGPT_WEBHOOK_PORT, settings.LAWGPT_WEBHOOK_HOST, () => {
    console.log(`webhook listening on http://${settings.LAWGPT_WEBHOOK_HOST}:${settings.LAWGPT_WEBHOOK_PORT}/s3-events`);
    for (const t of triggers) console.log(`  trigger ${t.name}: s3://${t.bucket}/${t.prefix}${t.versioned_folders ? '<folder>/' : ''} -> ${t.config}, quiet ${t.quiet_seconds} s`);
  });
  const stop = () => server.close(() => void temporal.connection.close().then(() => process.exit(0)));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err: Error) => {
  console.error(err instanceof TriggersError ? err.message : `webhook: ${err.message}`);
  process.exit(2);
});
