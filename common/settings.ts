// Where the orchestrator finds its services, read once from the environment (infra/with-stack-env.sh
// fills it for the local stack; a deployment sets the same variables). Never imported by workflows.
// S3 credentials are not here: the AWS SDK reads them from its usual chain (AWS_ACCESS_KEY_ID, ...),
// so pointing at AWS S3 instead of MinIO is a change of environment, not of code.
import { Client, Connection } from '@temporalio/client';
import { z } from 'zod';
import { describeIssues } from './config.js';

const Settings = z.object({
  TEMPORAL_ADDRESS: z.string().default('127.0.0.1:7233'),
  TEMPORAL_NAMESPACE: z.string().default('default'),
  TEMPORAL_UI_URL: z.string().url().default('http://127.0.0.1:8233'),
  LAWGPT_TASK_QUEUE: z.string().default('lawgpt-training'),
  // Unset for AWS S3; the MinIO endpoint locally.
  LAWGPT_S3_ENDPOINT: z.string().url().optional(),
  LAWGPT_S3_FORCE_PATH_STYLE: z.enum(['true', 'false']).default('false'),
  AWS_REGION: z.string().default('us-east-1'),
  LAWGPT_PYTHON: z.string().default('python3'),
  LAWGPT_WORK_DIR: z.string().default('.state/work'),
  // The webhook (webhook/server.ts); its token comes from LAWGPT_WEBHOOK_TOKEN, read there alone.
  LAWGPT_WEBHOOK_HOST: z.string().default('127.0.0.1'),
  LAWGPT_WEBHOOK_PORT: z.coerce.number().int().min(1).max(65535).default(8787),
  LAWGPT_WEBHOOK_TRIGGERS: z.string().default('configs/triggers.json'),
  // The worker's log level; DEBUG adds every line trainers write to stderr.
  LAWGPT_LOG_LEVEL: z.enum(['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR']).default('INFO'),
});
export type Settings = z.infer<typeof Settings>;

export function loadSettings(env: NodeJS.ProcessEnv = process.env): Settings {
  const parsed = Settings.safeParse(env);
  if (!parsed.success) {
    throw new Error(`invalid environment:\n  ${describeIssues(parsed.error).join('\n  ')}`);
  }
  return parsed.data;
}

/** The one way the CLIs and the worker reach Temporal: the configured address and namespace. */
export async function connectTemporal(settings: Pick<Settings, 'TEMPORAL_ADDRESS' | 'TEMPORAL_NAMESPACE'>): Promise<Client> {
  return new Client({ connection: await Connection.connect({ address: settings.TEMPORAL_ADDRESS }), namespace: settings.TEMPORAL_NAMESPACE });
}
