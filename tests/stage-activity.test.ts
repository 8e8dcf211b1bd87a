// The runStage activity against a real MinIO, with the stand-in trainer: inputs down, outputs up,
// and trainer failures turned into the right kind of activity failure.
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PutObjectCommand, S3Client, type ListObjectsV2CommandOutput } from '@aws-sdk/client-s3';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseRunConfig } from '../common/config.js';
import { BLOCKS_INDEX_FILE } from '../common/contract.js';
import type { StageResult, StageTask } from '../common/run.js';
import type { StageName } from '../common/stages.js';
import { blocksUri } from '../activities/block-cache.js';
import { createS3Client, downloadArtifact, ensureBucket, getText, listKeys, putText } from '../activities/s3.js';
import { cacheKey, inputObjects, recordStage } from '../activities/stage-cache.js';
import { clip, createStageActivities, s3Names } from '../activities/stage.js';
import { createFakeTrainer } from './helpers/fake-trainer.js';
import { freePort, startMinio, type TestMinio } from './helpers/minio.js';
import { findProcesses } from './helpers/processes.js';
import { tools } from './helpers/tools.js';

let minio: TestMinio;
let fake: string;
let work: string;
let savedPythonPath: string | undefined;

const config = parseRunConfig({
  name: 'activity-test',
  bucket: 'lawgpt-test',
  data: { corpus: 's3://lawgpt-test/data/corpus/', dialogue: 's3://lawgpt-test/data/d.jsonl', exam: 's3://lawgpt-test/data/e.jsonl' },
});

function task(stage: StageName, inputs: Record<string, string> = {}, runId = 'run-1'): StageTask {
  return { runId, bucket: 'lawgpt-test', stage, inputs, config: config[stage], split: config.data.split, cleaning: config.data.cleaning, runtime: { ...config.runtime, progress_report_seconds: 1 } };
}

// The stand-in trainer's vocab succeeds; any S3 folder will do for its inputs.
const VOCAB_INPUTS = { corpus: 's3://lawgpt-test/data/corpus/', base_tokenizer: 's3://lawgpt-test/data/corpus/' };

async function runStage(t: StageTask, workerThinksTrainerIs = 'fake', s3 = minio.client) {
  const { runStage } = createStageActivities({ s3, settings: { LAWGPT_PYTHON: tools.python, LAWGPT_WORK_DIR: work }, trainerVersion: async () => workerThinksTrainerIs });
  const heartbeats: unknown[] = [];
  const env = new MockActivityEnvironment({ attempt: 1 }, { logger: new DefaultLogger('ERROR') });
  env.on('heartbeat', (d) => heartbeats.push(d));
  const outcome = await env.run(runStage, t).then(
    (value) => ({ value, error: undefined }),
    (error: unknown) => ({ value: undefined, error: error as ApplicationFailure }),
  );
  return { ...outcome, heartbeats };
}

beforeAll(async () => {
  minio = await startMinio();
  fake = await createFakeTrainer();
  work = await mkdtemp(join(tmpdir(), 'lawgpt-activity-'));
  await ensureBucket(minio.client, 'lawgpt-test');
  await minio.client.send(new PutObjectCommand({ Bucket: 'lawgpt-test', Key: 'data/corpus/law.md', Body: '第一条' }));
  savedPythonPath = process.env.PYTHONPATH;
  process.env.PYTHONPATH = fake;
});
afterAll(async () => {
  process.env.PYTHONPATH = savedPythonPath;
  await minio?.stop();
  await rm(fake, { recursive: true, force: true });
  await rm(work, { recursive: true, force: true });
});

describe('runStage', () => {
  it("downloads no corpus for a pretrain whose blocks the block cache holds: they stand in for it", async () => {
    const inputs = { corpus: 's3://lawgpt-test/data/corpus/', tokenizer: 's3://lawgpt-test/data/tokenizer/', base_model: 's3://lawgpt-test/data/model/' };
    await putText(minio.client, inputs.tokenizer + 'tokenizer.json', '{}');
    await putText(minio.client, inputs.base_model + 'config.json', '{}');
    const given = async (runId: string) => {
      const { error } = await runStage(task('pretrain', inputs, runId));
      expect(error).toBeUndefined();
      return JSON.parse((await getText(minio.client, `s3://lawgpt-test/runs/${runId}/pretrain/model/given.json`))!);
    };
    expect(await given('reads-blocks-uncached')).toEqual({ base_model: ['config.json'], corpus: ['law.md'], tokenizer: ['tokenizer.json'] });
    const t = task('pretrain', inputs, 'reads-blocks-cached');
    const cache = blocksUri(t as Parameters<typeof blocksUri>[0], await inputObjects(minio.client, inputs), 'fake');
    await putText(minio.client, cache + 'train-00000.bin', 'blocks');
    await putText(minio.client, cache + BLOCKS_INDEX_FILE, '{}');
    expect(await given('reads-blocks-cached')).toEqual({ base_model: ['config.json'], blocks: [BLOCKS_INDEX_FILE, 'train-00000.bin'].sort(), tokenizer: ['tokenizer.json'] });
  });

  it('uploads every output under runs/<run>/<stage>/ and returns their URIs and metrics', async () => {
    const { value, error, heartbeats } = await runStage(task('vocab', VOCAB_INPUTS));
    expect(error).toBeUndefined();
    expect(value).toMatchObject({ stage: 'vocab', outputs: { tokenizer: 's3://lawgpt-test/runs/run-1/vocab/tokenizer/' }, metrics: { pieces: 42 } });
    // What it cost: one CPU process for the trainer's wall time, no tokens trained.
    const { usage } = value as StageResult;
    expect(usage).toMatchObject({ device: 'CPU', processes: 1, tokens: 0 });
    expect(usage!.wallSeconds).toBeGreaterThan(0);
    expect(usage!.deviceHours).toBeCloseTo(usage!.wallSeconds / 3600, 10);
    // The outputs, the stage's lineage, and its metrics (named by when the attempt was scheduled: 1 ms here).
    const part = 'runs/run-1/vocab/metrics/0000000000001-attempt-1/part-00000.jsonl';
    expect(await listKeys(minio.client, 's3://lawgpt-test/runs/run-1/vocab/')).toEqual(['runs/run-1/vocab/lineage.json', part, 'runs/run-1/vocab/tokenizer/pieces.txt']);
    const lineage = JSON.parse((await getText(minio.client, 's3://lawgpt-test/runs/run-1/vocab/lineage.json'))!);
    expect(lineage).toMatchObject({ stage: 'vocab', trainer_version: expect.any(String), git_commit: expect.any(String) });
    expect(lineage.inputs.map((i: { name: string }) => i.name).sort()).toEqual(Object.keys(VOCAB_INPUTS).sort());
    expect(heartbeats).toContainEqual({ stage: 'vocab', step: 2, totalSteps: 2, loss: 1.5 });
    // Every progress event, kept for the run report however seldom the workflow heard of them.
    const metrics = (await getText(minio.client, `s3://lawgpt-test/${part}`))!.trim().split('\n').map((line) => JSON.parse(line));
    expect(metrics.at(-1)).toMatchObject({ event: 'progress', step: 2, total_steps: 2, loss: 1.5, time: expect.any(String) });
  });

  it('hands the trainer local copies of its inputs', async () => {
    await runStage(task('vocab', VOCAB_INPUTS));
    const tokenizer = await downloadArtifact(minio.client, 's3://lawgpt-test/runs/run-1/vocab/tokenizer/', join(work, 'check'));
    expect(await readFile(join(tokenizer.path, 'pieces.txt'), 'utf8')).toBe('tokenizer from base_tokenizer,corpus');
  });

  it("takes a model folder given as a tokenizer without its weights, and the model input with them", async () => {
    const folder = 's3://lawgpt-test/models/llama/';
    const files = ['config.json', 'model-00001-of-00002.safetensors', 'model.safetensors.index.json', 'pytorch_model-00002-of-00002.bin', 'tokenizer.model', 'tokenizer_config.json'];
    for (const file of files) await putText(minio.client, `${folder}${file}`, 'x');
    const objects = await inputObjects(minio.client, { base_tokenizer: folder, base_model: folder });
    expect(objects.base_tokenizer.map((o) => o.key)).toEqual(['config.json', 'tokenizer.model', 'tokenizer_config.json']);
    expect(objects.base_model.map((o) => o.key)).toEqual(files);
    // The stage downloads what the listing holds, as here.
    const downloaded = await downloadArtifact(minio.client, folder, join(work, 'tokenizer-only'), objects.base_tokenizer);
    expect((await readdir(downloaded.path)).sort()).toEqual(['config.json', 'tokenizer.model', 'tokenizer_config.json']);
  });

  it('fails retryably with the stderr tail when the trainer crashes', async () => {
    const { error } = await runStage(task('base'));
    expect(error).toBeInstanceOf(ApplicationFailure);
    expect(error!.type).toBe('TrainerFailed');
    expect(error!.nonRetryable).toBeFalsy();
    expect(error!.message).toContain('trainer base exited with 3');
    expect(error!.message).toContain('MemoryError: out of memory in sentencepiece');
    // Nothing was committed: the retry policy's backoff applies.
    expect(error!.nextRetryDelay).toBeUndefined();
  });

  it('retries at once a trainer that crashed after committing a checkpoint', async () => {
    const { error } = await runStage(task('base', {}, 'checkpoint-then-crash'));
    expect(error!.type).toBe('TrainerFailed');
    expect(error!.nextRetryDelay).toBe('200 milliseconds');
    expect(await listKeys(minio.client, 's3://lawgpt-test/runs/checkpoint-then-crash/base/checkpoints/')).toContain(
      'runs/checkpoint-then-crash/base/checkpoints/checkpoint-1/manifest.json',
    );
  });

  it("resumes the retry from that checkpoint and deletes its local copy once the trainer has reported a step", async () => {
    const crashing = task('base', {}, 'checkpoint-then-crash-resumed');
    expect((await runStage(crashing)).error!.type).toBe('TrainerFailed');
    const { value, error } = await runStage(crashing);
    expect(error).toBeUndefined();
    expect(JSON.parse((await getText(minio.client, `${(value as StageResult).outputs.model}resumed.json`))!)).toEqual({ loaded: 'x', copy_left_after_the_step: false });
  });

  it('fails without retry when the trainer refuses its input, naming the S3 object and line', async () => {
    const corpus = 's3://lawgpt-test/data/corpus/';
    const { error } = await runStage(task('pretrain', { corpus, tokenizer: corpus, base_model: corpus }));
    expect(error!.type).toBe('InvalidInput');
    expect(error!.nonRetryable).toBe(true);
    expect(error!.message).toContain(': s3://lawgpt-test/data/corpus/law.md:1: a line of 50,000,000 characters, over data.max_line_chars (100,000)');
    expect(error!.message).not.toContain(work);
  });

  it('fails without retry when rank 0 refuses its input, whatever exit code the launcher passes on', async () => {
    const corpus = 's3://lawgpt-test/data/corpus/';
    const { error } = await runStage(task('pretrain', { corpus, tokenizer: corpus, base_model: corpus }, 'another-rank-exits-first'));
    expect(error!.type).toBe('InvalidInput');
    expect(error!.nonRetryable).toBe(true);
    expect(error!.message).toMatch(/^trainer pretrain exited with 1: s3:\/\/lawgpt-test\/data\/corpus\/law\.md:1: a line of/);
  });

  it('keeps the compiled layers a trainer offers, and gives them to later runs whose layers compile alike', async () => {
    const corpus = 's3://lawgpt-test/data/corpus/';
    const compiling = (runId: string, settings: Partial<StageTask['config']>) => {
      const t = task('pretrain', { corpus, tokenizer: corpus, base_model: corpus }, runId);
      return { ...t, config: { ...t.config, ...settings } as StageTask['config'] };
    };
    const given = async (runId: string) => JSON.parse((await getText(minio.client, `s3://lawgpt-test/runs/${runId}/pretrain/model/given.json`))!);
    const parts = async () => (await listKeys(minio.client, 's3://lawgpt-test/cache/compile/')).filter((key) => key.endsWith('.bin'));

    expect((await runStage(compiling('compiles-1', { compile: true }))).error).toBeUndefined();
    expect(await given('compiles-1')).toEqual({});
    const kept = await parts();
    expect(kept).toHaveLength(2);
    expect(kept[0]).toMatch(/^cache\/compile\/[0-9a-f]{64}\/torch-fake-cpu\.compiles-1-evaluation\.bin$/);

    // Another learning rate and length compile the same graphs: given the first run's parts, and adding its own.
    expect((await runStage(compiling('compiles-2', { compile: true, learning_rate: 1e-5, max_steps: 7 }))).error).toBeUndefined();
    expect(await given('compiles-2')).toEqual({
      'torch-fake-cpu.compiles-1-evaluation.bin': 'evaluation graphs of compiles-1',
      'torch-fake-cpu.compiles-1-training.bin': 'training graphs of compiles-1',
    });
    expect(await parts()).toHaveLength(4);
    // Another micro-batch compiles other graphs; a stage that never compiles is given none, and keeps none.
    expect((await runStage(compiling('compiles-3', { compile: true, micro_batch_size: 3 }))).error).toBeUndefined();
    expect(await given('compiles-3')).toEqual({});
    expect((await runStage(compiling('compiles-4', { compile: false }))).error).toBeUndefined();
    expect(await given('compiles-4')).toEqual({});
    expect(await parts()).toHaveLength(6);
  });

  describe('a trainer that reports nothing for runtime.stall_timeout_seconds after its first step', () => {
    const corpus = 's3://lawgpt-test/data/corpus/';
    const quiet = (runId: string): StageTask => {
      const t = task('pretrain', { corpus, tokenizer: corpus, base_model: corpus }, runId);
      return { ...t, runtime: { ...t.runtime, stall_timeout_seconds: 2, stop_grace_seconds: 2 } };
    };

    it('is killed when it hangs, deaf to the stop, and the attempt fails retryably', async () => {
      const started = Date.now();
      const { error } = await runStage(quiet('hangs'));
      expect(error).toBeInstanceOf(ApplicationFailure);
      expect(error!.type).toBe('TrainerStalled');
      expect(error!.nonRetryable).toBeFalsy();
      expect(error!.message).toContain('stage pretrain: the trainer has reported nothing for 2 s since step 1/100 (runtime.stall_timeout_seconds) and is taken for hung; it was stopped (trainer pretrain exited with SIGKILL)');
      // Nothing was committed: the retry policy's backoff applies.
      expect(error!.nextRetryDelay).toBeUndefined();
      // The stall window, then the grace period, and no more: not the stage timeout.
      expect(Date.now() - started).toBeLessThan(20_000);
      expect(await findProcesses('lawgpt_trainer', work)).toEqual([]);
    });

    it('saves a checkpoint when it is only silent, and the retry resumes from it at once', async () => {
      const { error } = await runStage(quiet('goes-quiet'));
      expect(error!.type).toBe('TrainerStalled');
      expect(error!.message).toContain('it was stopped (trainer pretrain exited with 143)');
      expect(error!.nextRetryDelay).toBe('200 milliseconds');
      expect(await listKeys(minio.client, 's3://lawgpt-test/runs/goes-quiet/pretrain/checkpoints/')).toContain('runs/goes-quiet/pretrain/checkpoints/checkpoint-3/manifest.json');
    });
  });

  it('fails without retry when an input is missing from S3', async () => {
    const { error } = await runStage(task('vocab', { ...VOCAB_INPUTS, corpus: 's3://lawgpt-test/data/missing/' }));
    expect(error!.type).toBe('InvalidInput');
    expect(error!.message).toBe("input 'corpus' not found: s3://lawgpt-test/data/missing/");
    // The trainer started beside the downloads, waiting for its request, is gone with the stage.
    expect(await findProcesses('lawgpt_trainer', work)).toEqual([]);
  });

  it('fails without retry, before the trainer starts, on an input folder holding keys no file can be named after', async () => {
    // AWS S3 takes keys such as 'a//b.md', 'a/../b.md' and 86 Chinese characters of a name, MinIO
    // does not all of them: its listing is given them as AWS would list them.
    const listing = new S3Client({ endpoint: minio.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: minio.credentials });
    listing.middlewareStack.add(
      (next, context) => async (args) => {
        const result = await next(args);
        if (context.commandName === 'ListObjectsV2Command') {
          const { Contents } = result.output as ListObjectsV2CommandOutput;
          Contents?.push(...['data/corpus/a//b.md', 'data/corpus/a/../b.md', `data/corpus/${'判'.repeat(86)}.md`].map((Key) => ({ Key, Size: 3, ETag: '"x"' })));
        }
        return result;
      },
      { step: 'initialize' },
    );
    // The corpus is the one folder among the inputs: its keys alone are named.
    const { error } = await runStage(task('vocab', { corpus: 's3://lawgpt-test/data/corpus/', base_tokenizer: 's3://lawgpt-test/data/tokenizer.json' }), 'fake', listing);
    listing.destroy();
    expect(error!.type).toBe('InvalidInput');
    expect(error!.nonRetryable).toBe(true);
    expect(error!.message).toContain("no plain path (an empty, '.' or '..' part, or one over 255 bytes)");
    for (const key of ['a//b.md', 'a/../b.md', `${'判'.repeat(86)}.md`]) expect(error!.message).toContain(`corpus: s3://lawgpt-test/data/corpus/${key}`);
    expect(await findProcesses('lawgpt_trainer', work)).toEqual([]);
    // A single object, too, whose name no file can take.
    const named = `s3://lawgpt-test/data/${'判'.repeat(86)}.jsonl`;
    const single = await runStage(task('vocab', { corpus: 's3://lawgpt-test/data/corpus/', base_tokenizer: named }));
    expect(single.error!.type).toBe('InvalidInput');
    expect(single.error!.message).toContain(`base_tokenizer: ${named}`);
  });

  it('takes a folder holding only a "Create folder" marker for a missing input', async () => {
    await putText(minio.client, 's3://lawgpt-test/data/marked/', '');
    const { error } = await runStage(task('vocab', { ...VOCAB_INPUTS, corpus: 's3://lawgpt-test/data/marked/' }));
    // Not a retryable "nothing under" from the download: a missing input, failing the stage at once.
    expect(error!.type).toBe('InvalidInput');
    expect(error!.message).toBe("input 'corpus' not found: s3://lawgpt-test/data/marked/");
  });

  it('treats a broken event stream as a contract violation', async () => {
    const { error } = await runStage(task('sft', { model: 's3://lawgpt-test/data/corpus/' }));
    expect(error!.type).toBe('ContractViolation');
    expect(error!.message).toContain('hello from a stray print');
  });

  it('leaves no working files behind', async () => {
    expect(await readdir(join(work, 'run-1'), { recursive: true })).toEqual([]);
    expect(await readdir(join(work, 'checkpoint-then-crash'), { recursive: true })).toEqual([]);
  });
});

describe('s3Names', () => {
  it('writes local input paths as the S3 objects they came from, folders and single objects alike', () => {
    const named = s3Names(
      { corpus: '/w/run/pretrain/inputs/corpus', dialogue: '/w/run/pretrain/inputs/dialogue/d.jsonl', corpus2: '/w/run/pretrain/inputs/corpus2' },
      { corpus: 's3://b/data/corpus/', dialogue: 's3://b/data/d.jsonl', corpus2: 's3://b/other/' },
    );
    expect(named('/w/run/pretrain/inputs/dialogue/d.jsonl:4: field missing')).toBe('s3://b/data/d.jsonl:4: field missing');
    expect(named('/w/run/pretrain/inputs/corpus2/a.md:1: bad; corpus /w/run/pretrain/inputs/corpus has no text')).toBe('s3://b/other/a.md:1: bad; corpus s3://b/data/corpus/ has no text');
  });
});

describe('clip', () => {
  it('keeps a failure message under a byte budget, counting Chinese as three bytes a character', () => {
    const stderr = `${'法'.repeat(3000)}\nMemoryError: out of memory`;
    const tail = clip(stderr, 2048, 'end');
    expect(Buffer.byteLength(tail)).toBeLessThanOrEqual(2048);
    expect(tail.startsWith('…')).toBe(true);
    expect(tail.endsWith('MemoryError: out of memory')).toBe(true);
    expect(clip('short', 2048, 'start')).toBe('short');
    expect(clip('x'.repeat(5000), 1024, 'start')).toBe(`${'x'.repeat(1021)}…`);
  });
});

describe('stageCache', () => {
  async function lookup(t: StageTask, s3 = minio.client, version = 'fake') {
    const { stageCache } = createStageActivities({ s3, settings: { LAWGPT_PYTHON: tools.python, LAWGPT_WORK_DIR: work }, trainerVersion: async () => version });
    const warnings: string[] = [];
    const logger = new DefaultLogger('WARN', (entry) => warnings.push(entry.message));
    const found: Awaited<ReturnType<typeof stageCache>> = await new MockActivityEnvironment({ attempt: 1 }, { logger }).run(stageCache, t, true);
    return { ...found, warnings };
  }
  // A config no runStage test uses, so that no earlier test has filled its entry.
  const cached = { ...task('vocab', VOCAB_INPUTS, 'cache-run'), config: { ...config.vocab, vocab_size: 1234 } };

  it('misses without an entry, hits once the stage is recorded, and misses on an unreadable entry', async () => {
    expect((await lookup(cached)).hit).toBeUndefined();
    const key = cacheKey(cached, await inputObjects(minio.client, cached.inputs), 'fake');
    const result = { stage: 'vocab' as const, outputs: { tokenizer: 's3://lawgpt-test/data/corpus/' }, metrics: { pieces: 3 } };
    await recordStage(minio.client, cached, key, result);
    expect((await lookup(cached)).hit).toEqual({ ...result, cachedFrom: 'cache-run' });

    await putText(minio.client, `s3://lawgpt-test/cache/vocab/${key}.json`, '{"key": truncated');
    const unreadable = await lookup(cached);
    expect(unreadable.hit).toBeUndefined();
    expect(unreadable.warnings.join('\n')).toContain(`ignoring unreadable cache entry s3://lawgpt-test/cache/vocab/${key}.json`);
  });

  it('records a stage under the version of the trainer that ran it, not the one the worker knew', async () => {
    // The trainer package is installed editable: its code can change between lookup and launch.
    const t = task('vocab', VOCAB_INPUTS, 'edited-under-the-worker');
    expect((await runStage(t, 'before-the-edit')).error).toBeUndefined();
    expect((await lookup(t, minio.client, 'fake')).hit?.outputs.tokenizer).toBe('s3://lawgpt-test/runs/edited-under-the-worker/vocab/tokenizer/');
    expect((await lookup(t, minio.client, 'before-the-edit')).hit).toBeUndefined();
  });

  it('fails on an S3 error instead of taking it for a miss, so the stage is not rerun', async () => {
    // Nothing listens there: the error is the kind an outage gives, for Temporal's retries.
    const unreachable = createS3Client({ LAWGPT_S3_ENDPOINT: `http://127.0.0.1:${await freePort()}`, LAWGPT_S3_FORCE_PATH_STYLE: 'true', AWS_REGION: 'us-east-1' }, minio.credentials);
    const failed = await lookup(cached, unreachable).then(
      () => undefined,
      (err: Error) => err,
    );
    expect(failed).toBeInstanceOf(Error);
    expect(failed).not.toBeInstanceOf(ApplicationFailure);
    expect(failed!.message).toMatch(/ECONNREFUSED/);
  });

  it('fails for good, naming the bucket, when S3 refuses the credentials', async () => {
    const denied = createS3Client({ LAWGPT_S3_ENDPOINT: minio.endpoint, LAWGPT_S3_FORCE_PATH_STYLE: 'true', AWS_REGION: 'us-east-1' }, { accessKeyId: 'nobody', secretAccessKey: 'not-the-secret' });
    const failed = (await lookup(cached, denied).catch((err: unknown) => err)) as ApplicationFailure;
    expect(failed).toBeInstanceOf(ApplicationFailure);
    expect(failed.nonRetryable).toBe(true);
    expect(failed.message).toBe("S3 refused this worker's credentials for bucket lawgpt-test (InvalidAccessKeyId): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY where it runs");
  });
});
