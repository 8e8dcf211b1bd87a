// Bad data on the real pipeline (Temporal dev server, MinIO, the real trainer): each case fails
// the stage before any training, naming the S3 object and line, or with data.on_bad_record=skip is
// left out and counted in the stage's metrics. Nothing is retried that a retry cannot fix.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ActivityFailure, ApplicationFailure, WorkflowFailedError } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { downloadArtifact, putText, uploadDir } from '../activities/s3.js';
import { createActivities } from '../activities/index.js';
import { STAGE_WORKER_OPTIONS } from '../activities/stage.js';
import { trainerVersion } from '../activities/trainer-process.js';
import { parseRunConfig } from '../common/config.js';
import type { PipelineResult } from '../common/run.js';
import { uploadDemoData } from '../infra/demo-data.js';
import { statusQuery } from '../workflows/definitions.js';
import { lawgptPipeline } from '../workflows/pipeline.js';
import { startMinio, type TestMinio } from './helpers/minio.js';
import { inBackground, startTemporal, workflowsPath } from './helpers/temporal.js';
import { tools } from './helpers/tools.js';

const BUCKET = 'lawgpt-bad';
const uri = (key: string) => `s3://${BUCKET}/${key}`;
const DATA = { corpus: uri('data/corpus/'), dialogue: uri('data/dialogue.jsonl'), exam: uri('data/exam.jsonl') };

let env: TestWorkflowEnvironment;
let minio: TestMinio;
let work: string;
let stopWorker: (() => Promise<void>) | undefined;
let base: { tokenizer: string; model: string };

function config(name: string, stages: string[], data: Record<string, unknown>, artifacts: Record<string, Record<string, string>> = {}) {
  return parseRunConfig({
    name,
    bucket: BUCKET,
    stages,
    data: { ...DATA, ...data },
    artifacts,
    base: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 2, max_position_embeddings: 256 },
    vocab: { vocab_size: 3000, input_sentence_size: 20000 },
    sft: { max_steps: 2, micro_batch_size: 2, cutoff_len: 1024, max_dialogue_records: 16, max_exam_records: 16 },
    runtime: { max_attempts: 3, retry_backoff_seconds: 1, progress_report_seconds: 1 },
  });
}

async function run(id: string, runConfig: ReturnType<typeof config>) {
  const handle = await env.client.workflow.start(lawgptPipeline, { workflowId: id, taskQueue: 'bad-data', args: [runConfig] });
  const outcome = await handle.result().then(
    (result: PipelineResult) => ({ result, error: undefined }),
    (error: unknown) => ({ result: undefined, error }),
  );
  const history = await handle.fetchHistory();
  const attempts = history.events!.filter((e) => e.activityTaskStartedEventAttributes && e.activityTaskStartedEventAttributes.attempt! > 1).length;
  return { ...outcome, status: await handle.query(statusQuery), retries: attempts };
}

/** The trainer's or the activity's own failure inside a failed run, and its message. */
function stageFailure(error: unknown): ApplicationFailure {
  expect(error).toBeInstanceOf(WorkflowFailedError);
  const stageFailed = (error as WorkflowFailedError).cause as ApplicationFailure;
  expect(stageFailed.type).toBe('StageFailed');
  const activity = stageFailed.cause as ActivityFailure;
  expect(activity).toBeInstanceOf(ActivityFailure);
  return activity.cause as ApplicationFailure;
}

beforeAll(async () => {
  [env, minio] = await Promise.all([startTemporal(), startMinio()]);
  work = await mkdtemp(join(tmpdir(), 'lawgpt-bad-data-'));
  const size = { statutes: 4, cases: 2, records: 12 };
  await uploadDemoData(minio.client, config('x', ['base'], {}).data, size);
  // The same documents beside one 50 MB line: a broken export.
  await uploadDemoData(minio.client, config('x', ['base'], { corpus: uri('dump/') }).data, size);
  await putText(minio.client, uri('dump/dump.txt'), '法'.repeat(50_000_000 / 3));
  for (const name of ['a.md', 'b.txt']) await putText(minio.client, uri(`blank/${name}`), ' \n\n');

  const worker = await Worker.create({
    connection: env.nativeConnection,
    taskQueue: 'bad-data',
    workflowsPath,
    activities: createActivities({ s3: minio.client, settings: { LAWGPT_PYTHON: tools.python, LAWGPT_WORK_DIR: work }, temporal: env.client, trainerVersion: () => trainerVersion(tools.python) }),
    ...STAGE_WORKER_OPTIONS,
  });
  stopWorker = inBackground(worker);
  const made = await run('base', config('base', ['base'], {}));
  base = made.result!.stages.base!.outputs as typeof base;
});
afterAll(async () => {
  await stopWorker?.();
  await env?.teardown();
  await minio?.stop();
  await rm(work, { recursive: true, force: true });
});

describe('bad data', () => {
  it('an empty corpus prefix, and one of blank files, fail vocab at once, naming the prefix', { timeout: 120_000 }, async () => {
    const empty = await run('empty-corpus', config('empty', ['vocab'], { corpus: uri('nothing/') }, { base }));
    const failure = stageFailure(empty.error);
    expect(failure.type).toBe('InvalidInput');
    expect(failure.message).toBe(`input 'corpus' not found: ${uri('nothing/')}`);

    const blank = await run('blank-corpus', config('blank', ['vocab'], { corpus: uri('blank/') }, { base }));
    expect(stageFailure(blank.error).message).toContain(`corpus ${uri('blank/')} has no text: its 2 files are blank or unreadable`);
    expect(blank.status.stages.vocab).toBe('failed');
    expect([empty.retries, blank.retries]).toEqual([0, 0]);
  });

  it('a corpus file that is one 50 MB line is named with its line, or skipped and counted', { timeout: 240_000 }, async () => {
    const failed = await run('dump-fail', config('dump', ['vocab'], { corpus: uri('dump/') }, { base }));
    const failure = stageFailure(failed.error);
    expect(failure.type).toBe('InvalidInput');
    expect(failure.message).toContain(`${uri('dump/dump.txt')}:1: a line of 16,666,666 characters, over data.max_line_chars (100,000)`);
    expect(failed.retries).toBe(0);

    const skipped = await run('dump-skip', config('dump', ['vocab'], { corpus: uri('dump/'), on_bad_record: 'skip' }, { base }));
    expect(skipped.error).toBeUndefined();
    expect(skipped.result!.stages.vocab!.metrics.skipped_records).toBe(1);
    expect(skipped.result!.stages.vocab!.metrics.pieces_added).toBeGreaterThan(0);
  });

  it('records that lack fields, and exam answers that are no option: fail names the first, skip counts them all', { timeout: 240_000 }, async () => {
    const dialogue = (await readFile(join(process.env.LAWGPT_SHARED_DATA!, 'dialogue/legal_consultation.jsonl'), 'utf8')).split('\n').slice(0, 4);
    const exam = (await readFile(join(process.env.LAWGPT_SHARED_DATA!, 'exam/disc_law_eval_mcq.jsonl'), 'utf8')).split('\n').slice(0, 6);
    const wrongAnswer = { ...JSON.parse(exam[0]), answer: 'Z' };
    await putText(minio.client, uri('records/dialogue.jsonl'), [...dialogue.slice(0, 2), '{"question": "没有律师回答"}', ...dialogue.slice(2)].join('\n'));
    await putText(minio.client, uri('records/exam.jsonl'), [...exam, JSON.stringify(wrongAnswer)].join('\n'));
    const records = { dialogue: uri('records/dialogue.jsonl'), exam: uri('records/exam.jsonl') };
    const artifacts = { pretrain: { model: base.model } };

    const failed = await run('records-fail', config('records', ['sft'], records, artifacts));
    const failure = stageFailure(failed.error);
    expect(failure.type).toBe('InvalidInput');
    expect(failure.message).toContain(`${uri('records/dialogue.jsonl')}:3: field 'answers' must be a non-empty list`);
    expect(failure.message).not.toContain(work);

    const skipped = await run('records-skip', config('records', ['sft'], { ...records, on_bad_record: 'skip' }, artifacts));
    expect(skipped.error).toBeUndefined();
    expect(skipped.result!.stages.sft!.metrics.skipped_records).toBe(2);
  });

  it('a base model with files missing is refused before any training, naming the folder and the files', { timeout: 120_000 }, async () => {
    const copy = await downloadArtifact(minio.client, base.model, join(work, 'broken-model'));
    await rm(join(copy.path, 'model.safetensors'));
    await writeFile(join(copy.path, 'README.md'), 'a copy that lost its weights');
    await uploadDir(minio.client, copy.path, uri('broken-model/'));

    const broken = await run('broken-model', config('broken', ['sft'], {}, { pretrain: { model: uri('broken-model/') } }));
    const failure = stageFailure(broken.error);
    expect(failure.type).toBe('InvalidInput');
    expect(failure.message).toContain(`input 'model' at ${uri('broken-model/')} is not a whole model folder: model.safetensors or pytorch_model.bin missing`);
    expect(broken.retries).toBe(0);
    expect(broken.status.step).toBeNull();
  });
});
