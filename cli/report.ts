// `start-run report <run> [--out file.html]` (npm run report): the run report on this machine. A
// run that has ended wrote its own to S3, which is fetched; one still going (or one that ended
// before reports existed) gets one built now from its status and what it has left in S3.
import { writeFile } from 'node:fs/promises';
import type { S3Client } from '@aws-sdk/client-s3';
import type { Client } from '@temporalio/client';
import { buildReport } from '../activities/report.js';
import { getText, s3Uri } from '../activities/s3.js';
import { REPORT_DATA, REPORT_PAGE, reportPrefix } from '../common/report.js';
import { STAGES } from '../common/stages.js';
import { CliError, configOf, EXIT, existing, needWorker, stagesOf } from './runs.js';

export async function fetchReport(client: Client, s3: S3Client, id: string, out: string): Promise<string> {
  const { handle, description } = await existing(client, id);
  const state = description.status.name.toLowerCase();
  const config = await configOf(client, handle);
  const prefix = s3Uri(config.bucket, reportPrefix(id));
  const written = state === 'running' ? undefined : await getText(s3, prefix + REPORT_PAGE);
  let page = written;
  let data = written && (await getText(s3, prefix + REPORT_DATA));
  if (!page) {
    if (state === 'running') await needWorker(client, id, description);
    const { stages, results, error } = await stagesOf(handle, state);
    if (error && !Object.keys(results).length) throw new CliError(`run ${id} ${state} without a report (${error}), and its stages' results are not known`, EXIT.runFailed);
    const known = Object.fromEntries(STAGES.map((s) => [s, stages[s] ?? (config.stages.includes(s) ? 'pending' : 'skipped')])) as Parameters<typeof buildReport>[1]['stages'];
    const built = await buildReport({ s3 }, { runId: id, config, stages: known, results });
    page = built.page;
    data = JSON.stringify(built.report);
  }
  const dataFile = out.replace(/\.html?$/, '') + '.json';
  for (const [file, text] of [[out, page], [dataFile, data]] as const) {
    if (!text) continue;
    try {
      await writeFile(file, text);
    } catch (err) {
      throw new CliError(`cannot save the report to ${file}: ${(err as Error).message}`, EXIT.invalidInput);
    }
  }
  return written ? `report of run ${id} (written by the run to ${prefix + REPORT_PAGE}) saved to ${out}` : `report of run ${id} (${state}, built now) saved to ${out}`;
}
