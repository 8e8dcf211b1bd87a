// The closing summary of `npm test` (infra/test_summary.py): what CI reads to know whether it passed.
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tools } from './helpers/tools.js';

const run = promisify(execFile);
let reports: string;

beforeEach(async () => {
  reports = await mkdtemp(join(tmpdir(), 'lawgpt-summary-'));
});
afterEach(async () => {
  await rm(reports, { recursive: true, force: true });
});

const vitestReport = (statuses: string[]) => ({
  numPassedTests: statuses.filter((s) => s === 'passed').length,
  numFailedTests: statuses.filter((s) => s === 'failed').length,
  numPendingTests: statuses.filter((s) => s === 'pending' || s === 'skipped').length,
  numTodoTests: 0,
  numRuntimeErrorTestSuites: 0,
  testResults: [
    {
      name: '/repo/tests/x.test.ts',
      status: statuses.includes('failed') ? 'failed' : 'passed',
      message: '',
      assertionResults: statuses.map((status, i) => ({ status, fullName: `x case ${i}` })),
    },
  ],
});

const pytestReport = (skipped: boolean) =>
  `<?xml version="1.0"?><testsuites><testsuite tests="2" failures="0" errors="0" skipped="${skipped ? 1 : 0}">` +
  `<testcase classname="tests.test_a" name="test_one"/>` +
  `<testcase classname="tests.test_a" name="test_two">${skipped ? '<skipped message="no GPU"/>' : ''}</testcase>` +
  `</testsuite></testsuites>`;

async function summarize(runnersStatus: number) {
  return run(tools.python, [join(process.cwd(), 'infra/test_summary.py'), reports, String(runnersStatus)]).then(
    ({ stdout }) => ({ code: 0, stdout }),
    (e: { code: number; stdout: string }) => ({ code: e.code, stdout: e.stdout }),
  );
}

describe('npm test summary', () => {
  it('passes only when every test ran and passed', async () => {
    await writeFile(join(reports, 'vitest.json'), JSON.stringify(vitestReport(['passed', 'passed'])));
    await writeFile(join(reports, 'pytest.xml'), pytestReport(false));
    const { code, stdout } = await summarize(0);
    expect(code).toBe(0);
    expect(stdout.trim().split('\n').at(-1)).toBe('OK: 4 passed, 0 failed, 0 skipped (vitest + pytest)');
  });

  it('fails the run for a skipped test even when both runners exit 0, and names it', async () => {
    await writeFile(join(reports, 'vitest.json'), JSON.stringify(vitestReport(['passed', 'skipped'])));
    await writeFile(join(reports, 'pytest.xml'), pytestReport(true));
    const { code, stdout } = await summarize(0);
    expect(code).toBe(1);
    expect(stdout).toContain('skipped x case 1');
    expect(stdout).toContain('skipped tests.test_a::test_two');
    expect(stdout).toContain('FAILED: 2 passed, 0 failed, 2 skipped');
  });

  it('names a failed test, so that the tail of a CI log says which one', async () => {
    await writeFile(join(reports, 'vitest.json'), JSON.stringify(vitestReport(['failed', 'passed'])));
    const { code, stdout } = await summarize(1);
    expect(code).toBe(1);
    expect(stdout).toContain('failed  x case 0');
  });
});
