// generate.ts as a user mistypes it: usage on --help, and wrong input named in one line, each
// before anything is fetched.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTemporal } from './helpers/temporal.js';

let env: TestWorkflowEnvironment;

beforeAll(async () => {
  env = await startTemporal();
});
afterAll(async () => {
  await env?.teardown();
});

async function generate(...args: string[]) {
  return promisify(execFile)(process.execPath, ['--import', 'tsx', 'generate.ts', ...args], { env: { ...process.env, TEMPORAL_ADDRESS: env.connection.options.address } }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (err: { code: number; stdout: string; stderr: string }) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr }),
  );
}

describe('generate.ts', () => {
  it('prints its usage on --help, refuses a wrong option or a local --model path (exit 2), and an unknown run is exit 3', async () => {
    const usage = /^usage: npm run generate -- \(--run <workflowId> \| --model s3:\/\/\.\.\.\/model\/\)/m;
    expect(await generate('--help')).toMatchObject({ code: 0, stdout: expect.stringMatching(usage) });
    expect(await generate('--bogus')).toMatchObject({ code: 2, stderr: expect.stringMatching(/^Unknown option '--bogus'/) });
    expect(await generate('--model', '/tmp/model')).toMatchObject({ code: 2, stderr: expect.stringMatching(/^--model \/tmp\/model: expected an s3:\/\/ URI\n/) });
    expect(await generate('--run', 'no-such-run', '--prompt', 'x')).toMatchObject({ code: 3, stderr: 'run no-such-run not found\n' });
  });
});
