// The whole pipeline for real: Temporal dev server, MinIO, the trainer with a tiny LLaMA.
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createActivities } from '../activities/index.js';
import { downloadArtifact, getText, listKeys } from '../activities/s3.js';
import { contentHash } from '../activities/stage-cache.js';
import type { MetricsRecord, RunReport } from '../common/report.js';
import { STAGE_WORKER_OPTIONS } from '../activities/stage.js';
import { trainerVersion } from '../activities/trainer-process.js';
import { parseRunConfig, type RunConfig } from '../common/config.js';
import { BLOCKS_INDEX_FILE } from '../common/contract.js';
import { STAGE_IO, STAGES } from '../common/stages.js';
import { uploadDemoData } from '../infra/demo-data.js';
import { lawgptPipeline } from '../workflows/pipeline.js';
import { STAGE_KEY, statusQuery } from '../workflows/definitions.js';
import { checkPage } from './helpers/browser.js';
import { startMinio, type TestMinio } from './helpers/minio.js';
import { startTemporal, workflowsPath } from './helpers/temporal.js';
import { tools } from './helpers/tools.js';

const config = parseRunConfig({
  name: 'e2e',
  bucket: 'lawgpt-e2e',
  data: {
    corpus: 's3://lawgpt-e2e/datasets/tiny/corpus/',
    dialogue: 's3://lawgpt-e2e/datasets/tiny/dialogue.jsonl',
    exam: 's3://lawgpt-e2e/datasets/tiny/exam.jsonl',
    instructions: 's3://lawgpt-e2e/datasets/tiny/instructions.jsonl',
    short_answer: 's3://lawgpt-e2e/datasets/tiny/short_answer.jsonl',
  },
  base: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 2, max_position_embeddings: 256 },
  vocab: { vocab_size: 3000, input_sentence_size: 20000 },
  pretrain: { max_steps: 4, micro_batch_size: 2, block_size: 64, deepspeed: { profile: 'cpu', master_port: 29613 } },
  sft: { max_steps: 3, micro_batch_size: 2, cutoff_len: 128, max_dialogue_records: 16, max_exam_records: 16, max_instruction_records: 16 },
  eval: { block_size: 64, max_heldout_blocks: 4, max_exam_questions: 4, max_new_tokens: 4, max_short_answers: 2, short_answer_max_new_tokens: 8 },
  runtime: { max_attempts: 1, progress_report_seconds: 1 },
});

// The report page and its screenshot, for a person to look at after `npm test`.
const REPORT_OUT = new URL('../.state/test-output/report/', import.meta.url).pathname;

let env: TestWorkflowEnvironment;
let minio: TestMinio;
let work: string;

beforeAll(async () => {
  [env, minio] = await Promise.all([startTemporal(), startMinio()]);
  work = await mkdtemp(join(tmpdir(), 'lawgpt-e2e-'));
  await uploadDemoData(minio.client, config.data, { statutes: 6, cases: 2, records: 60 });
});
afterAll(async () => {
  await env?.teardown();
  await minio?.stop();
  await rm(work, { recursive: true, force: true });
});

async function runPipeline(workflowId: string, runConfig: RunConfig) {
  const worker = await Worker.create({
    connection: env.nativeConnection,
    taskQueue: 'e2e',
    workflowsPath,
    activities: createActivities({
      s3: minio.client,
      settings: { LAWGPT_PYTHON: tools.python, LAWGPT_WORK_DIR: work },
      temporal: env.client,
      trainerVersion: () => trainerVersion(tools.python),
    }),
    ...STAGE_WORKER_OPTIONS,
  });
  return worker.runUntil(async () => {
    const handle = await env.client.workflow.start(lawgptPipeline, { workflowId, taskQueue: 'e2e', args: [runConfig] });
    const result = await handle.result();
    return { result, status: await handle.query(statusQuery), stageAttribute: (await handle.describe()).typedSearchAttributes.get(STAGE_KEY) };
  });
}

describe('the real pipeline', () => {
  it('runs every stage on the tiny model and leaves every artifact in S3', { timeout: 600_000 }, async () => {
    const { result, status, stageAttribute } = await runPipeline('e2e-run', config);

    expect(Object.keys(result.stages)).toEqual(['base', 'vocab', 'pretrain', 'sft', 'eval']);
    expect(Object.values(status.stages).every((s) => s === 'completed')).toBe(true);
    expect(stageAttribute).toBe('done');
    for (const [stage, stageResult] of Object.entries(result.stages)) {
      expect(Object.keys(stageResult.outputs).sort()).toEqual([...STAGE_IO[stage as keyof typeof STAGE_IO].outputs].sort());
      for (const uri of Object.values(stageResult.outputs)) expect((await listKeys(minio.client, uri)).length).toBeGreaterThan(0);
    }

    const files = (uri: string) => listKeys(minio.client, uri).then((keys) => keys.map((k) => k.split('/').pop()));
    expect(await files(result.stages.vocab!.outputs.tokenizer)).toEqual(expect.arrayContaining(['tokenizer.model', 'tokenizer_config.json']));
    expect(await files(result.stages.sft!.outputs.model)).toEqual(expect.arrayContaining(['config.json', 'model.safetensors', 'tokenizer.model']));
    expect(await files(result.stages.sft!.outputs.adapter)).toEqual(expect.arrayContaining(['adapter_config.json']));

    const vocab = result.stages.vocab!.metrics;
    expect(vocab.merged_vocab_size).toBe(vocab.base_vocab_size + vocab.pieces_added);
    expect(vocab.heldout_tokens_per_char_merged).toBeLessThan(vocab.heldout_tokens_per_char_base);
    expect(result.stages.pretrain!.metrics.embedding_rows).toBeGreaterThanOrEqual(vocab.merged_vocab_size);

    // What each stage cost, in the result and the status query: pretrain trained 4 steps of 2
    // processes x 2 sequences x 64 tokens; vocab trains nothing.
    expect(result.stages.pretrain!.usage).toMatchObject({ device: 'CPU', processes: 2, tokens: 4 * 2 * 2 * 64 });
    expect(result.stages.sft!.usage!.tokens).toBeGreaterThan(0);
    expect(result.stages.vocab!.usage).toMatchObject({ processes: 1, tokens: 0 });
    expect(status.results.pretrain!.usage).toEqual(result.stages.pretrain!.usage);

    const reportKey = `runs/e2e-run/eval/report/report.json`;
    const report = JSON.parse(await (await minio.client.send(new GetObjectCommand({ Bucket: 'lawgpt-e2e', Key: reportKey }))).Body!.transformToString());
    expect(result.evaluation!.heldout_perplexity).toBe(report.heldout_perplexity);
    expect(report.exam_questions).toBeGreaterThan(0);
    expect(report.short_answer_results).toHaveLength(2);
    expect(result.evaluation!.short_answer_rouge_l).toBe(report.short_answer_rouge_l);

    // The S3 secret key reaches neither the run's history nor its report (logs: tests/chaos.test.ts).
    const history = JSON.stringify(await env.client.workflow.getHandle('e2e-run').fetchHistory());
    expect(history.length).toBeGreaterThan(10_000);
    for (const text of [history, JSON.stringify(report)]) expect(text).not.toContain(minio.credentials.secretAccessKey);
  });

  it('leaves a run report whose charts all draw offline, with every number in its JSON', { timeout: 120_000 }, async () => {
    const prefix = 's3://lawgpt-e2e/runs/e2e-run/report/';
    const report: RunReport = JSON.parse((await getText(minio.client, `${prefix}report.json`))!);
    const page = (await getText(minio.client, `${prefix}index.html`))!;
    const pagePath = join(REPORT_OUT, 'e2e-run.html');
    await mkdir(REPORT_OUT, { recursive: true });
    await writeFile(pagePath, page);

    const seen = await checkPage(pagePath, join(REPORT_OUT, 'e2e-run.png'));
    expect(seen.errors).toEqual([]);
    expect(seen.requests).toEqual([]);
    expect(Object.keys(seen.charts).sort()).toEqual(['bits-per-char', 'exam-by-model', 'exam-by-subject', 'loss-pretrain', 'loss-sft', 'usage', 'vocabulary']);
    for (const [chart, painted] of Object.entries(seen.charts)) expect(painted, chart).toBeGreaterThan(1000);
    // The page draws from the same JSON the run put beside it.
    expect(JSON.parse(/<script type="application\/json" id="report-data">(.*?)<\/script>/s.exec(page)![1])).toEqual(report);

    // Every step the trainer logged, though the workflow heard of progress once a second at most.
    const curve = (stage: string) => report.stages.find((s) => s.stage === stage)!.curve;
    expect(curve('pretrain').map((p) => p.step)).toEqual([1, 2, 3, 4]);
    expect(curve('sft').filter((p) => p.loss !== undefined)).toHaveLength(3);
    const pretrain = report.stages.find((s) => s.stage === 'pretrain')!;
    expect(pretrain.checkpoints.length).toBeGreaterThan(0);
    for (const c of pretrain.checkpoints) {
      expect(c.kept_as).toContain('newest');
      expect(curve('pretrain').find((p) => p.step === c.step)!.eval_loss).toBe(c.eval_loss);
    }
    expect(report.bits_per_char.base).toBeGreaterThan(report.bits_per_char.final!);
    expect(report.exam!.answer_logprob.pretrained).toBeLessThan(0);
    expect(report.vocabulary!.pieces_added).toBeGreaterThan(0);
    expect(report.short_answer!.questions).toBe(2);
    expect(page).toContain(`short-answer questions: ROUGE-L ${report.short_answer!.rouge_l.toFixed(3)}`);
    expect(report.usage.tokens).toBe(Object.values(report.stages).reduce((sum, s) => sum + (s.usage?.tokens ?? 0), 0));
    expect(report.lineage.config_hash).toBe(contentHash(config));
    // Lineage per stage, from what its worker downloaded and ran: pretrain read the corpus and
    // the base stage's model, and exactly the objects the stage listed.
    expect(report.lineage.stages.map((s) => s.stage)).toEqual(['base', 'vocab', 'pretrain', 'sft', 'eval']);
    const pretrainLineage = report.lineage.stages.find((s) => s.stage === 'pretrain')!;
    expect(Object.fromEntries(pretrainLineage.inputs.map((i) => [i.name, i.uri]))).toEqual({
      corpus: config.data.corpus,
      tokenizer: 's3://lawgpt-e2e/runs/e2e-run/vocab/tokenizer/',
      base_model: 's3://lawgpt-e2e/runs/e2e-run/base/model/',
    });
    const corpus = pretrainLineage.inputs.find((i) => i.name === 'corpus')!;
    const listed = await listKeys(minio.client, config.data.corpus!);
    expect(corpus.objects.map((o) => `datasets/tiny/corpus/${o.key}`).sort()).toEqual(listed.sort());
    for (const o of corpus.objects) expect(o.etag).toMatch(/\S/);
    expect(pretrainLineage.git_commit).toMatch(/^[0-9a-f]{40}/);
    expect(pretrainLineage.trainer_version).toBe(await trainerVersion(tools.python));
    expect(report.lineage.report_git_commit).toBe(pretrainLineage.git_commit);
  });

  it('uploads TensorBoard event files that TensorBoard reads back with the logged losses', { timeout: 120_000 }, async () => {
    const local = join(work, 'tensorboard-pretrain');
    await downloadArtifact(minio.client, 's3://lawgpt-e2e/runs/e2e-run/pretrain/tensorboard/', local);
    const read = `
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
events = EventAccumulator(sys.argv[1]); events.Reload()
print(json.dumps({tag: [[e.step, e.value] for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}))`;
    const scalars: Record<string, [number, number][]> = JSON.parse(execFileSync(tools.python, ['-c', read, local], { encoding: 'utf8' }));
    const [part] = await listKeys(minio.client, 's3://lawgpt-e2e/runs/e2e-run/pretrain/metrics/');
    const metrics = (await getText(minio.client, `s3://lawgpt-e2e/${part}`))!
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as MetricsRecord)
      .filter((r) => r.event === 'progress' && r.loss !== undefined) as Extract<MetricsRecord, { event: 'progress' }>[];
    expect(scalars['train/loss'].map(([step]) => step)).toEqual(metrics.map((r) => r.step));
    for (const [i, [, value]] of scalars['train/loss'].entries()) expect(value).toBeCloseTo(metrics[i].loss!, 4);
  });

  it('serves an identical second run from the stage cache, unless the cache is off', { timeout: 300_000 }, async () => {
    const first = (await runPipeline('e2e-again', config)).result;
    for (const stage of STAGES) {
      expect(first.stages[stage]!.cachedFrom).toBe('e2e-run');
      expect(first.stages[stage]!.outputs).toEqual(Object.fromEntries(STAGE_IO[stage].outputs.map((o) => [o, `s3://lawgpt-e2e/runs/e2e-run/${stage}/${o}/`])));
    }

    const uncached = await runPipeline('e2e-no-cache', parseRunConfig({ ...config, stages: ['base'], runtime: { ...config.runtime, cache: false } }));
    expect(uncached.status.stages.base).toBe('completed');
    expect(uncached.result.stages.base!.cachedFrom).toBeUndefined();
    expect(uncached.result.stages.base!.outputs.model).toBe('s3://lawgpt-e2e/runs/e2e-no-cache/base/model/');
  });

  it('starts a run at pretrain from the first run\'s artifacts, reusing its tokenized blocks', { timeout: 300_000 }, async () => {
    const out = (stage: string, name: string) => `s3://lawgpt-e2e/runs/e2e-run/${stage}/${name}/`;
    const artifacts = { base: { model: out('base', 'model') }, vocab: { tokenizer: out('vocab', 'tokenizer') } };
    const again = await runPipeline('e2e-from-artifacts', parseRunConfig({ ...config, stages: ['pretrain'], artifacts, runtime: { ...config.runtime, cache: false } }));

    const pretrain = again.result.stages.pretrain!;
    expect(pretrain.cachedFrom).toBeUndefined();
    expect(pretrain.metrics.blocks_from_cache).toBe(1);
    expect(pretrain.metrics.train_blocks).toBeGreaterThan(0);
    expect(again.status.stages).toMatchObject({ base: 'skipped', vocab: 'skipped', pretrain: 'completed' });
    // One cache entry: shards, and the index that completes them.
    const cached = await listKeys(minio.client, 's3://lawgpt-e2e/cache/blocks/');
    expect(new Set(cached.map((key) => key.split('/')[2])).size).toBe(1);
    expect(cached.filter((key) => key.endsWith(`/${BLOCKS_INDEX_FILE}`))).toHaveLength(1);
    expect(cached.some((key) => /\/train-\d{5}\.bin$/.test(key))).toBe(true);
  });
});
