// Starts one pipeline run from a config file:   tsx start-run.ts configs/demo.json [--follow] [--no-cache]
// The config is validated before anything is contacted; with --follow, stage progress is shown live
// until the run ends, then every artifact's S3 URI. --no-cache runs every stage even where an
// identical one completed before.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import { ConfigError, parseRunConfig, type RunConfig } from './common/config.js';
import { EXIT_INVALID_INPUT } from './common/contract.js';
import { WORKFLOW_TYPE, type PipelineResult, type PipelineStatus } from './common/run.js';
import { connectTemporal, loadSettings, type Settings } from './common/settings.js';
import { runMetadata, runSearchAttributes, statusQuery } from './workflows/definitions.js';

function readConfig(path: string): RunConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new ConfigError([`${path}: ${(err as Error).message}`]);
  }
  return parseRunConfig(raw);
}

function uiLink(settings: Settings, workflowId: string, runId: string) {
  return `${settings.TEMPORAL_UI_URL}/namespaces/${settings.TEMPORAL_NAMESPACE}/workflows/${encodeURIComponent(workflowId)}/${runId}/history`;
}

function describe(status: PipelineStatus): string {
  if (!status.stage) return 'starting';
  const state = status.stages[status.stage];
  if (state !== 'running' || status.step === null) return `${status.stage}: ${state}`;
  const loss = status.loss === null ? '' : `  loss ${status.loss.toFixed(4)}`;
  return `${status.stage}: step ${status.step}/${status.totalSteps}${loss}`;
}

async function follow(handle: WorkflowHandle): Promise<PipelineResult> {
  let last = '';
  let finished = false;
  const result = handle.result().finally(() => (finished = true));
  while (!finished) {
    try {
      const line = describe(await handle.query(statusQuery));
      if (line !== last) console.log(`  ${line}`);
      last = line;
    } catch {
      // The first workflow task may not have run yet; the next poll will tell.
    }
    await Promise.race([result.catch(() => undefined), new Promise((r) => setTimeout(r, 1000))]);
  }
  return result;
}

function printResult(result: PipelineResult) {
  console.log('artifacts:');
  for (const [stage, stageResult] of Object.entries(result.stages)) {
    const cached = stageResult.cachedFrom ? `  (cached: made by run ${stageResult.cachedFrom})` : '';
    for (const [name, uri] of Object.entries(stageResult.outputs)) console.log(`  ${stage}.${name}: ${uri}${cached}`);
  }
  if (result.evaluation) console.log(`evaluation: ${JSON.stringify(result.evaluation)}`);
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { follow: { type: 'boolean', default: false }, 'no-cache': { type: 'boolean', default: false } },
  });
  if (positionals.length !== 1) {
    console.error('usage: tsx start-run.ts <config.json> [--follow] [--no-cache]');
    return EXIT_INVALID_INPUT;
  }
  let config: RunConfig;
  try {
    config = readConfig(positionals[0]);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(err.message);
    console.error('nothing was started.');
    return EXIT_INVALID_INPUT;
  }
  if (values['no-cache']) config.runtime.cache = false;

  const settings = loadSettings();
  const client = await connectTemporal(settings);
  const workflowId = `${config.name}-${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '')}`;
  const handle = await client.workflow.start(WORKFLOW_TYPE, {
    workflowId,
    taskQueue: settings.LAWGPT_TASK_QUEUE,
    args: [config],
    typedSearchAttributes: runSearchAttributes(config, 'cli'),
    ...runMetadata(config, 'cli'),
  });
  console.log(`started run ${workflowId}`);
  console.log(`  Temporal UI: ${uiLink(settings, workflowId, handle.firstExecutionRunId)}`);
  if (!values.follow) return 0;

  try {
    printResult(await follow(handle));
    console.log(`run ${workflowId} completed`);
    return 0;
  } catch (err) {
    const cause = err instanceof WorkflowFailedError ? err.cause : err;
    console.error(`run ${workflowId} failed: ${(cause as Error).message}`);
    return 1;
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
