// Where the orchestrator finds its services, read once from the environment (infra/with-stack-env.sh
// fills it for the local stack; a deployment sets the same variables). Never imported by workflows.
// S3 credentials are not here: the AWS SDK reads them from its usual chain (AWS_ACCESS_KEY_ID, ...),
// so pointing at AWS S3 instead of MinIO is a change of environment, not of code.
import { readFileSync } from 'node:fs';
import { Client, Connection, type ConnectionOptions } from '@temporalio/client';
import { z } from 'zod';
import { describeIssues } from './config.js';

const Settings = z.object({
  TEMPORAL_ADDRESS: z.string().default('127.0.0.1:7233'),
  TEMPORAL_NAMESPACE: z.string().default('default'),
  TEMPORAL_UI_URL: z.string().url().default('http://127.0.0.1:8233'),
  // A secured cluster: mTLS with a client certificate and key (PEM files), and/or TLS with an API
  // key (Temporal Cloud). TEMPORAL_API_KEY is read where the connection is made, never stored here.
  TEMPORAL_TLS_CERT: z.string().optional(),
  TEMPORAL_TLS_KEY: z.string().optional(),
  // A private CA for the server's certificate, and the name to check it against, when not the address's.
  TEMPORAL_TLS_CA: z.string().optional(),
  TEMPORAL_TLS_SERVER_NAME: z.string().optional(),
  LAWGPT_TASK_QUEUE: z.string().default('lawgpt-training'),
  // `orchestrator`: runs the workflows and every activity on LAWGPT_TASK_QUEUE (locally, the one
  // worker). `trainer`: runs stages only, on the queue a run config names for them
  // (runtime.task_queues), as the workers on GPU machines do.
  LAWGPT_WORKER_ROLE: z.enum(['orchestrator', 'trainer']).default('orchestrator'),
  // Stages this worker runs at once. A training stage takes every GPU of its machine (its
  // DeepSpeed hostfile), so a GPU worker keeps 1; an orchestrator may take more of the CPU stages.
  LAWGPT_WORKER_SLOTS: z.coerce.number().int().min(1).max(64).default(1),
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
  // A file the worker touches every 30 s while it polls: a container's health check (infra/gpu-worker.Dockerfile).
  LAWGPT_HEALTH_FILE: z.string().optional(),
  // The commit the worker's code was built from, for run reports, where it has no .git (an image).
  LAWGPT_GIT_COMMIT: z.string().optional(),
  // The worker's log level; DEBUG adds every line trainers write to stderr.
  LAWGPT_LOG_LEVEL: z.enum(['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR']).default('INFO'),
});
export type Settings = z.infer<typeof Settings>;
// Names of environment variables that hold secrets: never passed to a trainer, nor to other hosts.
export const SECRET_NAME = /SECRET|TOKEN|PASSWORD|CREDENTIAL|(^|_)KEY($|_)/i;
/** Every variable the settings read (deployment files are checked against them). */
export const SETTING_NAMES = Object.keys(Settings.shape);

export function loadSettings(env: NodeJS.ProcessEnv = process.env): Settings {
  const parsed = Settings.safeParse(env);
  if (!parsed.success) {
    throw new Error(`invalid environment:\n  ${describeIssues(parsed.error).join('\n  ')}`);
  }
  return parsed.data;
}

type TemporalSettings = Pick<Settings, 'TEMPORAL_ADDRESS' | 'TEMPORAL_NAMESPACE' | 'TEMPORAL_TLS_CERT' | 'TEMPORAL_TLS_KEY' | 'TEMPORAL_TLS_CA' | 'TEMPORAL_TLS_SERVER_NAME'>;

/**
 * How to reach Temporal, for the client and the worker's native connection alike: plain locally;
 * TLS with a client certificate (mTLS) when TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY name PEM files;
 * TLS with an API key when TEMPORAL_API_KEY is set (Temporal Cloud).
 */
export function temporalConnection(settings: TemporalSettings, apiKey = process.env.TEMPORAL_API_KEY): Pick<ConnectionOptions, 'address' | 'tls'> & { apiKey?: string } {
  const { TEMPORAL_TLS_CERT: cert, TEMPORAL_TLS_KEY: key, TEMPORAL_TLS_CA: ca, TEMPORAL_TLS_SERVER_NAME: serverName } = settings;
  if (Boolean(cert) !== Boolean(key)) throw new Error('TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY go together: a client certificate needs its key');
  const secured = Boolean(cert || ca || serverName || apiKey);
  const tls = secured
    ? {
        ...(cert && key && { clientCertPair: { crt: readFileSync(cert), key: readFileSync(key) } }),
        ...(ca && { serverRootCACertificate: readFileSync(ca) }),
        ...(serverName && { serverNameOverride: serverName }),
      }
    : undefined;
  return { address: settings.TEMPORAL_ADDRESS, ...(tls && { tls }), ...(apiKey && { apiKey }) };
}

/** The one way the CLIs and the webhook reach Temporal (the worker's native connection uses temporalConnection too). */
export async function connectTemporal(settings: TemporalSettings): Promise<Client> {
  return new Client({ connection: await Connection.connect(temporalConnection(settings)), namespace: settings.TEMPORAL_NAMESPACE });
}
