// Checkpoints in a real MinIO: manifest last, retention, and resume that skips what does not verify.
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { CheckpointUploader, findResumePoint, sha256File } from '../activities/checkpoints.js';
import { ensureBucket, listKeys } from '../activities/s3.js';
import type { CheckpointManifest } from '../common/contract.js';
import { startMinio, type TestMinio } from './helpers/minio.js';

let minio: TestMinio;
let work: string;
const prefix = 's3://ckpt/runs/r1/pretrain/checkpoints/';

/** A checkpoint folder as the trainer leaves it: files, then manifest.json describing them. */
async function fakeCheckpoint(step: number, extraListed?: string, evalLoss?: number): Promise<string> {
  const dir = join(work, 'local', `checkpoint-${step}`);
  await mkdir(join(dir, 'global_step'), { recursive: true });
  await writeFile(join(dir, 'model.safetensors'), `weights at ${step}`.repeat(1000));
  await writeFile(join(dir, 'global_step', 'optim_states.pt'), `optimizer at ${step}`);
  const paths = ['model.safetensors', 'global_step/optim_states.pt'];
  const files = await Promise.all(
    paths.map(async (path) => ({ path, size: (await readFile(join(dir, path))).length, sha256: await sha256File(join(dir, path)) })),
  );
  if (extraListed) files.push({ path: extraListed, size: 1, sha256: '0'.repeat(64) });
  const manifest: CheckpointManifest = {
    manifest_version: 1, run_id: 'r1', stage: 'pretrain', step, world_size: 1, config_hash: 'a'.repeat(64), vocab_size: 100, trainer_version: 't',
    files: files as CheckpointManifest['files'], ...(evalLoss !== undefined && { eval_loss: evalLoss }),
  }; // prettier-ignore
  await writeFile(join(dir, 'manifest.json'), JSON.stringify(manifest));
  return dir;
}

const committedSteps = async (under = prefix) =>
  (await listKeys(minio.client, under)).filter((k) => k.endsWith('/manifest.json')).map((k) => Number(/checkpoint-(\d+)/.exec(k)![1])).sort((a, b) => a - b);

beforeAll(async () => {
  minio = await startMinio();
  await ensureBucket(minio.client, 'ckpt');
  work = await mkdtemp(join(tmpdir(), 'lawgpt-ckpt-'));
});
afterAll(async () => {
  await minio?.stop();
  await rm(work, { recursive: true, force: true });
});

describe('checkpoints', () => {
  it('commits each checkpoint, keeps the newest ones and frees the local copies', async () => {
    const seen: number[] = [];
    const failures: Error[] = [];
    const uploader = new CheckpointUploader(minio.client, prefix, 2, { committed: (c) => seen.push(c.step), retrying: (_, err) => failures.push(err), failed: (_, err) => failures.push(err) });
    const dirs = [await fakeCheckpoint(2), await fakeCheckpoint(4), await fakeCheckpoint(6)];
    dirs.forEach((dir, i) => uploader.submit([2, 4, 6][i], dir));
    await uploader.drain();

    expect(failures).toEqual([]);
    expect(seen).toEqual([2, 4, 6]);
    expect(uploader.committed?.step).toBe(6);
    expect(await committedSteps()).toEqual([4, 6]);
    expect((await listKeys(minio.client, prefix)).filter((k) => k.includes('checkpoint-2/'))).toEqual([]);
    expect(dirs.some((d) => existsSync(d))).toBe(false);
  });

  it('never writes the manifest of a checkpoint whose files did not all upload, and goes on with the next', async () => {
    const failures: string[] = [];
    const uploader = new CheckpointUploader(minio.client, prefix, 2, {
      committed: () => {},
      retrying: (step) => failures.push(`${step}: tried again`),
      failed: (step, err) => failures.push(`${step}: ${err.message}`),
    });
    // Given up at once, though nothing newer waits: broken on disk, it would fail every try alike.
    uploader.submit(8, await fakeCheckpoint(8, 'missing-file.bin'));
    await uploader.drain();
    uploader.submit(10, await fakeCheckpoint(10));
    await uploader.drain();
    expect(failures).toEqual([expect.stringMatching(/^8: .*missing-file\.bin/)]);
    expect(await committedSteps()).toEqual([6, 10]);
  });

  // S3 refuses every put under the checkpoint's folder while `away` says so, for longer than a
  // transfer's own retries (7.5 s). A run of its own, so that later tests find the one above as it was.
  const awayPrefix = 's3://ckpt/runs/r3/pretrain/checkpoints/';
  const awayFor = (away: (key: string) => boolean) => {
    const client = new S3Client({ endpoint: minio.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: minio.credentials });
    client.middlewareStack.add(
      (next, context) => async (args) => {
        if (context.commandName === 'PutObjectCommand' && away((args.input as { Key: string }).Key)) throw Object.assign(new Error('ServiceUnavailable'), { $fault: 'server' });
        return next(args);
      },
      { step: 'initialize' },
    );
    return client;
  };

  it('tries a checkpoint again while S3 is away, keeping its local copy until it is committed', async () => {
    let away = true;
    const events: string[] = [];
    const dir = await fakeCheckpoint(12);
    const client = awayFor(() => away);
    const uploader = new CheckpointUploader(client, awayPrefix, 2, {
      committed: (c) => events.push(`${c.step} committed`),
      retrying: (step, _, seconds) => {
        events.push(`${step} again in ${seconds} s, kept: ${existsSync(dir)}`);
        away = false;
      },
      failed: (step, err) => events.push(`${step} failed: ${err.message}`),
    }, 100);
    uploader.submit(12, dir);
    await uploader.drain();
    client.destroy();
    expect(events).toEqual(['12 again in 0.1 s, kept: true', '12 committed']);
    expect(await committedSteps(awayPrefix)).toEqual([12]);
    expect(existsSync(dir)).toBe(false);
  }, 30_000);

  it('gives a checkpoint up for a newer one while S3 is away, so that the disk holds no more of them', async () => {
    const events: string[] = [];
    const older = await fakeCheckpoint(14);
    const client = awayFor((key) => key.includes('checkpoint-14/'));
    const uploader = new CheckpointUploader(client, awayPrefix, 2, {
      committed: (c) => events.push(`${c.step} committed`),
      retrying: (step) => events.push(`${step} again`),
      failed: (step) => events.push(`${step} given up, kept: ${existsSync(older)}`),
    }, 60_000);
    uploader.submit(14, older);
    // The newer one comes while the older waits a minute to try again: it goes up at once.
    await vi.waitFor(() => expect(events).toEqual(['14 again']), { timeout: 20_000 });
    uploader.submit(16, await fakeCheckpoint(16));
    await uploader.drain();
    client.destroy();
    expect(events).toEqual(['14 again', '14 given up, kept: true', '16 committed']);
    expect(existsSync(older)).toBe(false);
    expect(await committedSteps(awayPrefix)).toEqual([12, 16]);
  }, 30_000);

  it('keeps the checkpoint with the lowest held-out loss besides the newest ones', async () => {
    const bestPrefix = 's3://ckpt/runs/r2/pretrain/checkpoints/';
    const uploader = new CheckpointUploader(minio.client, bestPrefix, 1, { committed: () => {}, retrying: () => {}, failed: () => {} });
    for (const [step, loss] of [[1, 3.0], [2, 1.5], [3, 2.0], [4, 2.5]]) uploader.submit(step, await fakeCheckpoint(step, undefined, loss));
    await uploader.drain();
    const steps = (await listKeys(minio.client, bestPrefix)).filter((k) => k.endsWith('/manifest.json')).map((k) => Number(/checkpoint-(\d+)/.exec(k)![1]));
    expect(steps.sort((a, b) => a - b)).toEqual([2, 4]);
  });

  it('resumes from the newest committed checkpoint', async () => {
    const point = await findResumePoint(minio.client, prefix, join(work, 'resume-a'), () => {});
    expect(point?.step).toBe(10);
    expect(await readFile(join(point!.path, 'global_step', 'optim_states.pt'), 'utf8')).toBe('optimizer at 10');
    expect(JSON.parse(await readFile(join(point!.path, 'manifest.json'), 'utf8')).step).toBe(10);
  });

  it('detects a corrupt file and falls back to the checkpoint before', async () => {
    await minio.client.send(new PutObjectCommand({ Bucket: 'ckpt', Key: 'runs/r1/pretrain/checkpoints/checkpoint-10/model.safetensors', Body: 'flipped bits' }));
    const warnings: string[] = [];
    const point = await findResumePoint(minio.client, prefix, join(work, 'resume-b'), (w) => warnings.push(w));
    expect(point?.step).toBe(6);
    expect(warnings).toEqual([expect.stringMatching(/^checkpoint-10 .* unusable \(model\.safetensors has 12 bytes, the manifest says \d+\)/)]);
    expect(existsSync(join(work, 'resume-b', 'checkpoint-10'))).toBe(false);
  });

  it('skips an invalid manifest, and finds nothing where there is nothing', async () => {
    await minio.client.send(new PutObjectCommand({ Bucket: 'ckpt', Key: 'runs/r1/pretrain/checkpoints/checkpoint-12/manifest.json', Body: '{"step": 12}' }));
    const warnings: string[] = [];
    expect((await findResumePoint(minio.client, prefix, join(work, 'resume-c'), (w) => warnings.push(w)))?.step).toBe(6);
    expect(warnings[0]).toMatch(/^checkpoint-12 .* unusable \(invalid manifest: manifest_version: /);
    expect(await findResumePoint(minio.client, 's3://ckpt/runs/other/pretrain/checkpoints/', join(work, 'resume-d'), () => {})).toBeUndefined();
  });
});
