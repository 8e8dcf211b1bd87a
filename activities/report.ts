// The `writeReport` activity: the run report (report/) built from the run's state and S3, and put
// beside the run's artifacts, s3://<bucket>/runs/<runId>/report/{index.html,report.json}.
import type { S3Client } from '@aws-sdk/client-s3';
import { REPORT_DATA, REPORT_PAGE, reportPrefix, type RunSnapshot } from '../common/report.js';
import type { Settings } from '../common/settings.js';
import { collectReport } from '../report/collect.js';
import { renderPage } from '../report/page.js';
import { gitCommit } from './provenance.js';
import { putJson, putText, s3Uri } from './s3.js';
import { refused } from './stage.js';

export interface ReportDeps {
  s3: S3Client;
  settings?: Partial<Pick<Settings, 'LAWGPT_GIT_COMMIT'>>;
}

/** The report of a run as it stands: its JSON and its page. */
export async function buildReport(deps: ReportDeps, snapshot: RunSnapshot) {
  const report = await collectReport(deps.s3, snapshot, await gitCommit(deps.settings?.LAWGPT_GIT_COMMIT), new Date());
  return { report, page: renderPage(report) };
}

export function createReportActivities(deps: ReportDeps) {
  /** Writes the run's report to S3 and returns the page's URI. */
  async function writeReport(snapshot: RunSnapshot): Promise<string> {
    try {
      const { report, page } = await buildReport(deps, snapshot);
      const prefix = s3Uri(snapshot.config.bucket, reportPrefix(snapshot.runId));
      await putJson(deps.s3, prefix + REPORT_DATA, report);
      await putText(deps.s3, prefix + REPORT_PAGE, page, 'text/html; charset=utf-8');
      return prefix + REPORT_PAGE;
    } catch (err) {
      throw refused(err, snapshot.config.bucket);
    }
  }
  return { writeReport };
}
