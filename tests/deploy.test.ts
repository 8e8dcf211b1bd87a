// The deployment files, checked as far as a machine without a Docker engine can: the compose file
// through docker compose's own `config` (interpolation, schema, merge keys), agreeing with the
// settings code, the search attributes, the triggers and the recipe's task queues; the worker's
// Dockerfile through hadolint. Nothing here pulls, builds or starts an image (README "Deploying").
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseRunConfig, RuntimeConfig } from '../common/config.js';
import { SEARCH_ATTRIBUTES } from '../common/run.js';
import { loadSettings, SETTING_NAMES } from '../common/settings.js';
import { tools } from './helpers/tools.js';

const run = promisify(execFile);
const root = new URL('..', import.meta.url).pathname;
const read = (path: string) => readFileSync(new URL(`../${path}`, import.meta.url), 'utf8');

interface Service {
  image: string;
  environment?: Record<string, string>;
  ports?: { target: number; published: string }[];
  volumes?: { type: string; source: string; target: string }[];
  command?: string[];
  healthcheck?: { test: string[] };
  deploy?: { resources: { reservations: { devices: { capabilities: string[] }[] } } };
  user?: string;
  stop_grace_period?: string;
}

async function composeConfig(envFile?: string): Promise<{ services: Record<string, Service>; volumes: Record<string, unknown> }> {
  const args = ['-f', 'infra/compose.yaml', ...(envFile ? ['--env-file', envFile] : []), '--profile', 'gpu', 'config', '--format', 'json'];
  const { stdout } = await run(tools.compose, args, { cwd: root, env: { PATH: process.env.PATH } });
  return JSON.parse(stdout);
}

// Read by the code, though not through common/settings.ts: the AWS SDK's credentials, the
// webhook's token, DeepSpeed's compiled-ops folder.
const READ_ELSEWHERE = ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'LAWGPT_WEBHOOK_TOKEN', 'TORCH_EXTENSIONS_DIR'];

describe('infra/compose.yaml', () => {
  let services: Record<string, Service>;
  let volumes: Record<string, unknown>;
  let ours: [string, Service][];
  beforeAll(async () => {
    ({ services, volumes } = await composeConfig('infra/deploy.env.example'));
    ours = Object.entries(services).filter(([, s]) => s.image.startsWith('lawgpt-worker'));
  });

  it('runs Temporal on PostgreSQL with its UI, MinIO, the webhook, the orchestrator and a GPU worker', () => {
    expect(Object.keys(services).sort()).toEqual(['gpu-worker', 'minio', 'minio-setup', 'orchestrator', 'postgres', 'temporal', 'temporal-search-attributes', 'temporal-ui', 'webhook']);
    expect(services.temporal.environment).toMatchObject({ DB: 'postgres12', POSTGRES_SEEDS: 'postgres' });
    expect(services['gpu-worker'].deploy!.resources.reservations.devices[0].capabilities).toEqual(['gpu']);
    expect(services.orchestrator.deploy).toBeUndefined();
  });

  it('gives our services only variables the code reads, with values the settings accept', () => {
    expect(ours.map(([name]) => name).sort()).toEqual(['gpu-worker', 'orchestrator', 'webhook']);
    for (const [name, service] of ours) {
      const unknown = Object.keys(service.environment!).filter((key) => !SETTING_NAMES.includes(key) && !READ_ELSEWHERE.includes(key));
      expect(unknown, name).toEqual([]);
      expect(() => loadSettings(service.environment), name).not.toThrow();
    }
  });

  it('wires the ports and queues the code expects', () => {
    const env = (name: string) => services[name].environment!;
    expect(env('orchestrator').TEMPORAL_ADDRESS).toBe('temporal:7233');
    expect(services.temporal.ports!.map((p) => p.target)).toContain(7233);
    expect(services['temporal-ui'].ports!.map((p) => p.target)).toEqual([8080]);
    expect(env('orchestrator').TEMPORAL_UI_URL).toBe('http://localhost:8080');
    expect(env('orchestrator').LAWGPT_S3_ENDPOINT).toBe('http://minio:9000');
    expect(services.minio.ports!.map((p) => p.target)).toContain(9000);
    // MinIO notifies the webhook where it listens, with the token it checks.
    expect(env('minio').MINIO_NOTIFY_WEBHOOK_ENDPOINT_LAWGPT).toBe(`http://webhook:${env('webhook').LAWGPT_WEBHOOK_PORT}/s3-events`);
    expect(env('minio').MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_LAWGPT).toBe(env('webhook').LAWGPT_WEBHOOK_TOKEN);
    expect(services.webhook.healthcheck!.test.join(' ')).toContain(`127.0.0.1:${env('webhook').LAWGPT_WEBHOOK_PORT}/healthz`);
    // The webhook starts runs on the orchestrator's queue; the recipe's GPU stages go to the GPU worker's.
    expect(env('webhook').LAWGPT_TASK_QUEUE).toBe(env('orchestrator').LAWGPT_TASK_QUEUE);
    expect(env('orchestrator').LAWGPT_WORKER_ROLE).toBe('orchestrator');
    expect(env('gpu-worker')).toMatchObject({ LAWGPT_WORKER_ROLE: 'trainer', LAWGPT_WORKER_SLOTS: '1' });
    for (const recipe of ['lawgpt', 'bentsao']) {
      const queues = Object.values(parseRunConfig(JSON.parse(read(`configs/${recipe}.json`))).runtime.task_queues ?? {});
      expect(new Set(queues), recipe).toEqual(new Set([env('gpu-worker').LAWGPT_TASK_QUEUE]));
    }
  });

  it('gives the workers time to save, hash and upload a final checkpoint when stopped, not Docker\'s 10 s', () => {
    const seconds = (period: string) => {
      const [, h, m, s] = /^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(period)!;
      return Number(h ?? 0) * 3600 + Number(m ?? 0) * 60 + Number(s ?? 0);
    };
    const graces = ['lawgpt', 'bentsao'].map((recipe) => parseRunConfig(JSON.parse(read(`configs/${recipe}.json`))).runtime.stop_grace_seconds);
    const longest = Math.max(...graces, RuntimeConfig.parse({}).stop_grace_seconds);
    // An upload of the final checkpoint after the trainer's grace: 10 minutes at least.
    for (const name of ['orchestrator', 'gpu-worker']) expect(seconds(services[name].stop_grace_period ?? '10s'), name).toBeGreaterThanOrEqual(longest + 600);
  });

  it('registers every search attribute the pipeline sets, and watches every trigger\'s prefix', () => {
    const script = services['temporal-search-attributes'].command!.join(' ');
    const names = /for name in ([\w ]+?); do/.exec(script)![1].split(' ');
    expect(names.sort()).toEqual(Object.values(SEARCH_ATTRIBUTES).sort());
    expect(script).toContain('--type Keyword');
    const setup = services['minio-setup'].command!.join(' ');
    for (const trigger of JSON.parse(read('configs/triggers.json')).triggers) {
      expect(setup).toContain(`mc mb --ignore-existing lawgpt/${trigger.bucket}`);
      expect(setup).toContain(`mc event add lawgpt/${trigger.bucket} arn:minio:sqs::LAWGPT:webhook --event put --prefix ${trigger.prefix}`);
    }
  });

  it('keeps what must persist in named volumes, the workers\' work folders included', () => {
    expect(Object.keys(volumes).sort()).toEqual(['gpu-work', 'minio-data', 'minio-events', 'orchestrator-work', 'postgres-data']);
    const mounts = (name: string) => Object.fromEntries(services[name].volumes!.map((v) => [v.source, v.target]));
    expect(mounts('postgres')).toEqual({ 'postgres-data': '/var/lib/postgresql/data' });
    expect(mounts('minio')).toEqual({ 'minio-data': '/data', 'minio-events': services.minio.environment!.MINIO_NOTIFY_WEBHOOK_QUEUE_DIR_LAWGPT });
    for (const worker of ['orchestrator', 'gpu-worker']) expect(Object.values(mounts(worker))).toEqual([services[worker].environment!.LAWGPT_WORK_DIR]);
  });

  it('takes every secret from the env file, and refuses to start without them, naming each', async () => {
    const text = read('infra/compose.yaml');
    for (const secret of ['POSTGRES_PASSWORD', 'LAWGPT_S3_SECRET_KEY', 'LAWGPT_WEBHOOK_TOKEN']) expect(text).toContain(`\${${secret}:?set ${secret} in infra/deploy.env}`);
    expect(services.orchestrator.environment!.AWS_SECRET_ACCESS_KEY).toBe('change-me');
    const failure = await composeConfig().catch((err: { stderr: string }) => err.stderr);
    expect(failure).toMatch(/set (POSTGRES_PASSWORD|LAWGPT_S3_ACCESS_KEY|LAWGPT_S3_SECRET_KEY|LAWGPT_WEBHOOK_TOKEN) in infra\/deploy\.env/);
    expect(read('.gitignore')).toContain('infra/deploy.env');
  });
});

describe('infra/gpu-worker.Dockerfile', () => {
  const dockerfile = read('infra/gpu-worker.Dockerfile');

  it('passes hadolint', async () => {
    const { stdout } = await run(tools.hadolint, ['infra/gpu-worker.Dockerfile'], { cwd: root });
    expect(stdout).toBe('');
  });

  it('installs a CUDA 12 torch with V100 kernels, runs as a non-root user, and checks its own health', () => {
    expect(dockerfile).toMatch(/^FROM nvidia\/cuda:12\.\d+\.\d+-cudnn-devel/m);
    expect(dockerfile).toContain('ARG TORCH_INDEX=https://download.pytorch.org/whl/cu126');
    expect(dockerfile).toContain(`ARG TORCH_VERSION=${/^torch==(.+)$/m.exec(read('trainer-py/requirements.txt'))![1]}`);
    expect(dockerfile).toContain("assert 'sm_70' in flags");
    expect(dockerfile).toMatch(/^USER 10001$/m);
    expect(dockerfile).toMatch(/^HEALTHCHECK .*\n.*LAWGPT_HEALTH_FILE/m);
    expect(SETTING_NAMES).toContain('LAWGPT_HEALTH_FILE');
  });
});
