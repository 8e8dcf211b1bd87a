// start-run.ts as a user runs it: a bad config is refused before anything is started, a good one
// (its data in S3) starts a run.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseRunConfig } from '../common/config.js';
import { SEARCH_ATTRIBUTES } from '../common/run.js';
import { uploadDemoData } from '../infra/demo-data.js';
import { startMinio, type TestMinio } from './helpers/minio.js';
import { startTemporal } from './helpers/temporal.js';

const run = promisify(execFile);
let env: TestWorkflowEnvironment;
let minio: TestMinio;
let work: string;

beforeAll(async () => {
  [env, minio] = await Promise.all([startTemporal(), startMinio()]);
  work = await mkdtemp(join(tmpdir(), 'lawgpt-start-run-'));
});
afterAll(async () => {
  await env?.teardown();
  await minio?.stop();
  await rm(work, { recursive: true, force: true });
});

async function startRun(config: unknown) {
  const path = join(work, 'config.json');
  await writeFile(path, typeof config === 'string' ? config : JSON.stringify(config));
  const s3 = { LAWGPT_S3_ENDPOINT: minio.endpoint, LAWGPT_S3_FORCE_PATH_STYLE: 'true', AWS_ACCESS_KEY_ID: minio.credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: minio.credentials.secretAccessKey };
  return run('npx', ['tsx', 'start-run.ts', path], { env: { ...process.env, TEMPORAL_ADDRESS: env.connection.options.address, ...s3 } }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (err: { code: number; stdout: string; stderr: string }) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr }),
  );
}

async function workflowCount() {
  let count = 0;
  for await (const _ of env.client.workflow.list()) count++;
  return count;
}

describe('start-run.ts', () => {
  it('rejects a config with three wrong fields, names all three and starts nothing', async () => {
    const demo = JSON.parse(await readFile(new URL('../configs/demo.json', import.meta.url), 'utf8'));
    const bad = { ...demo, name: 'Has Spaces', vocab: { ...demo.vocab, vocab_size: 0 }, sft: { ...demo.sft, dialogue_answers: 'some' } };
    const result = await startRun(bad);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('invalid run config (3 problems)');
    expect(result.stderr).toMatch(/^\s+name: /m);
    expect(result.stderr).toMatch(/^\s+vocab\.vocab_size: /m);
    expect(result.stderr).toMatch(/^\s+sft\.dialogue_answers: /m);
    expect(result.stderr).toContain('nothing was started');
    expect(await workflowCount()).toBe(0);
  });

  it('rejects a file that is not JSON', async () => {
    const result = await startRun('{"name": "demo",');
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/config\.json: .*JSON/);
    expect(await workflowCount()).toBe(0);
  });

  it('starts a valid config and prints its Temporal UI link', async () => {
    const demo = JSON.parse(await readFile(new URL('../configs/demo.json', import.meta.url), 'utf8'));
    await uploadDemoData(minio.client, parseRunConfig(demo).data, { statutes: 2, cases: 1, records: 5 });
    const result = await startRun(demo);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const id = /started run (\S+)/.exec(result.stdout)![1];
    expect(result.stdout).toContain(`/namespaces/default/workflows/${id}/`);
    const description = await env.client.workflow.getHandle(id).describe();
    expect(description.type).toBe('lawgptPipeline');
    // Understandable from the UI alone: filterable attributes and a summary.
    const attribute = (name: string) => description.typedSearchAttributes.get(defineSearchAttributeKey(name, SearchAttributeType.KEYWORD));
    expect(Object.values(SEARCH_ATTRIBUTES).map(attribute)).toEqual(['pending', 'demo', demo.data.corpus, 'llama-h64-l2 (mistral_common:tokenizer.model.v1)', 'cli']);
    expect(await description.staticSummary()).toBe(`demo: base → vocab → pretrain → sft → eval on ${demo.data.corpus}`);
    expect(await description.staticDetails()).toContain('started by cli');
    await env.client.workflow.getHandle(id).terminate('test over');
  });
});
