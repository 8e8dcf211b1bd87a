// Artifact transfers against a real MinIO server.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { S3Client } from '@aws-sdk/client-s3';
import { fetchBlocks, storeBlocks } from '../activities/block-cache.js';
import { deleteObject, deletePrefix, downloadArtifact, downloadObject, ensureBucket, getText, listKeys, putText, relativeParts, uploadDir, uploadFile } from '../activities/s3.js';
import { startMinio, type TestMinio } from './helpers/minio.js';

let minio: TestMinio;
let work: string;

beforeAll(async () => {
  minio = await startMinio();
  await ensureBucket(minio.client, 'artifacts');
  await ensureBucket(minio.client, 'artifacts'); // idempotent
  work = await mkdtemp(join(tmpdir(), 'lawgpt-s3-'));
});
afterAll(async () => {
  await minio?.stop();
  await rm(work, { recursive: true, force: true });
});

async function tree(dir: string): Promise<Record<string, string>> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  const files = entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
  return Object.fromEntries(await Promise.all(files.map(async (f) => [f.slice(dir.length + 1), await readFile(f, 'utf8')])));
}

describe('S3 artifacts', () => {
  it('round-trips a folder with nested and non-ASCII names', async () => {
    const source = join(work, 'model');
    await mkdir(join(source, 'sub dir', '民法'), { recursive: true });
    await writeFile(join(source, 'config.json'), '{"vocab_size": 32960}');
    await writeFile(join(source, 'sub dir', '民法', '第一条.md'), '第一条 为了保护民事主体的合法权益');
    await writeFile(join(source, 'big.bin'), 'x'.repeat(12 * 1024 * 1024)); // multipart

    const stats = await uploadDir(minio.client, source, 's3://artifacts/runs/r1/pretrain/model/');
    expect(stats.files).toBe(3);
    expect((await listKeys(minio.client, 's3://artifacts/runs/r1/pretrain/model/')).sort()).toEqual([
      'runs/r1/pretrain/model/big.bin',
      'runs/r1/pretrain/model/config.json',
      'runs/r1/pretrain/model/sub dir/民法/第一条.md',
    ]);

    const copy = await downloadArtifact(minio.client, 's3://artifacts/runs/r1/pretrain/model/', join(work, 'copy'));
    expect(copy.files).toBe(3);
    expect(await tree(copy.path)).toEqual(await tree(source));
  });

  it('uploads a folder\'s completing file only after every other one', async () => {
    const source = join(work, 'blocks');
    await mkdir(source, { recursive: true });
    for (const name of ['heldout-00000.bin', 'index.json', 'train-00000.bin', 'train-00001.bin']) await writeFile(join(source, name), name);
    const seen: string[] = [];
    const watched = new S3Client({ endpoint: minio.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: minio.credentials });
    watched.middlewareStack.add(
      (next, context) => async (args) => {
        const name = (args.input as { Key: string }).Key.split('/').pop()!;
        if (context.commandName === 'PutObjectCommand') seen.push(`start ${name}`);
        const result = await next(args);
        if (context.commandName === 'PutObjectCommand') seen.push(`done ${name}`);
        return result;
      },
      { step: 'initialize' },
    );
    await storeBlocks(watched, source, 's3://artifacts/cache/blocks/k1/');
    watched.destroy();
    expect(seen.filter((e) => e.startsWith('done')).sort()).toEqual(['done heldout-00000.bin', 'done index.json', 'done train-00000.bin', 'done train-00001.bin']);
    expect(seen.slice(-2)).toEqual(['start index.json', 'done index.json']);
  });

  it('counts cached blocks only once their index is there', async () => {
    const fetched = await fetchBlocks(minio.client, 's3://artifacts/cache/blocks/k1/', join(work, 'got'));
    expect(await readdir(fetched!)).toHaveLength(4);
    await deleteObject(minio.client, 's3://artifacts/cache/blocks/k1/index.json');
    expect(await fetchBlocks(minio.client, 's3://artifacts/cache/blocks/k1/', join(work, 'got-again'))).toBeUndefined();
    expect(await fetchBlocks(minio.client, 's3://artifacts/cache/blocks/none/', join(work, 'none'))).toBeUndefined();
  });

  it('downloads a single object as a file named like the key', async () => {
    await uploadFile(minio.client, join(work, 'model', 'config.json'), 's3://artifacts/datasets/exam.jsonl');
    const got = await downloadArtifact(minio.client, 's3://artifacts/datasets/exam.jsonl', join(work, 'exam'));
    expect(got.path).toBe(join(work, 'exam', 'exam.jsonl'));
    expect(await readFile(got.path, 'utf8')).toBe('{"vocab_size": 32960}');
  });

  it('goes on with a download broken midway from the first byte it lacks, and hashes exactly what it wrote', async () => {
    const content = randomBytes(3 << 20);
    await writeFile(join(work, 'shard.bin'), content);
    await uploadFile(minio.client, join(work, 'shard.bin'), 's3://artifacts/broken/shard.bin');
    // The first response's body breaks after 1 MiB, as a reset connection does.
    const asked: { Range?: string; IfMatch?: string }[] = [];
    const flaky = new S3Client({ endpoint: minio.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: minio.credentials });
    flaky.middlewareStack.add(
      (next) => async (args) => {
        asked.push({ ...(args.input as { Range?: string; IfMatch?: string }) });
        const result = await next(args);
        const output = result.output as { Body: Readable };
        if (asked.length === 1) output.Body = Readable.from(breakAfter(output.Body, 1 << 20));
        return result;
      },
      { step: 'initialize' },
    );
    const got = await downloadObject(flaky, 'artifacts', 'broken/shard.bin', join(work, 'broken', 'shard.bin'), true);
    flaky.destroy();
    expect(asked).toHaveLength(2);
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(asked[1].Range!)![1]);
    expect(resumedAt).toBeGreaterThanOrEqual(1 << 20);
    expect(resumedAt).toBeLessThan(content.length);
    expect(asked[1].IfMatch).toMatch(/^"[0-9a-f-]+"$/);
    expect((await readFile(join(work, 'broken', 'shard.bin'))).equals(content)).toBe(true);
    expect(got).toEqual({ bytes: content.length, sha256: createHash('sha256').update(content).digest('hex') });
  });

  it('fetches an object again from the start when its response fails after the last byte, as a checksum mismatch does', async () => {
    const content = randomBytes(1 << 20);
    await writeFile(join(work, 'whole.bin'), content);
    await uploadFile(minio.client, join(work, 'whole.bin'), 's3://artifacts/broken/whole.bin');
    const asked: { Range?: string }[] = [];
    const flaky = new S3Client({ endpoint: minio.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: minio.credentials });
    flaky.middlewareStack.add(
      (next) => async (args) => {
        asked.push({ ...(args.input as { Range?: string }) });
        const result = await next(args);
        const output = result.output as { Body: Readable };
        if (asked.length === 1) output.Body = Readable.from(breakAfter(output.Body, content.length));
        return result;
      },
      { step: 'initialize' },
    );
    const got = await downloadObject(flaky, 'artifacts', 'broken/whole.bin', join(work, 'broken', 'whole.bin'), true);
    flaky.destroy();
    expect(asked).toEqual([{ Bucket: 'artifacts', Key: 'broken/whole.bin' }, { Bucket: 'artifacts', Key: 'broken/whole.bin' }]);
    expect((await readFile(join(work, 'broken', 'whole.bin'))).equals(content)).toBe(true);
    expect(got).toEqual({ bytes: content.length, sha256: createHash('sha256').update(content).digest('hex') });
  });

  it('tries a small request again when S3 fails it for a moment, as a restarting server does, but not one S3 refused', async () => {
    // Each command's first two sends fail as the SDK's own retries would leave them, with a server fault.
    const sends: Record<string, number> = {};
    const outage = new S3Client({ endpoint: minio.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: minio.credentials });
    outage.middlewareStack.add(
      (next, context) => async (args) => {
        const sent = (sends[context.commandName!] = (sends[context.commandName!] ?? 0) + 1);
        if (sent <= 2) throw Object.assign(new Error('ServiceUnavailable'), { $fault: 'server' });
        return next(args);
      },
      { step: 'initialize' },
    );
    await putText(outage, 's3://artifacts/outage/a.json', '{"a":1}');
    expect(await getText(outage, 's3://artifacts/outage/a.json')).toBe('{"a":1}');
    expect(await listKeys(outage, 's3://artifacts/outage/')).toEqual(['outage/a.json']);
    expect(await deletePrefix(outage, 's3://artifacts/outage/')).toBe(1);
    await deleteObject(outage, 's3://artifacts/outage/a.json');
    expect(sends).toEqual({ PutObjectCommand: 3, GetObjectCommand: 3, ListObjectsV2Command: 4, DeleteObjectsCommand: 3, DeleteObjectCommand: 3 });
    // An object that is not there is an answer, not an outage: asked once.
    expect(await getText(outage, 's3://artifacts/outage/a.json')).toBeUndefined();
    expect(sends.GetObjectCommand).toBe(4);
    outage.destroy();
  });

  it('closes the file of every upload request S3 fails, so that the file, once deleted, gives its bytes back to the disk', async () => {
    // Each upload request fails twice, as a socket timeout leaves it, before S3 takes it.
    const sends: Record<string, number> = {};
    const failing = new S3Client({ endpoint: minio.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: minio.credentials });
    failing.middlewareStack.add(
      (next, context) => async (args) => {
        if (context.commandName !== 'PutObjectCommand' && context.commandName !== 'UploadPartCommand') return next(args);
        const request = `${context.commandName} ${(args.input as { PartNumber?: number }).PartNumber ?? ''}`.trim();
        const sent = (sends[request] = (sends[request] ?? 0) + 1);
        if (sent <= 2) throw Object.assign(new Error('TimeoutError'), { $fault: 'server' });
        return next(args);
      },
      { step: 'initialize' },
    );
    const [small, large] = [join(work, 'upload-small.bin'), join(work, 'upload-large.bin')];
    await writeFile(small, randomBytes(1000));
    await writeFile(large, randomBytes(40 << 20)); // two parts
    await uploadFile(failing, small, 's3://artifacts/failing/small.bin');
    await uploadFile(failing, large, 's3://artifacts/failing/large.bin');
    failing.destroy();
    expect(sends).toEqual({ PutObjectCommand: 3, 'UploadPartCommand 1': 3, 'UploadPartCommand 2': 3 });
    await new Promise((r) => setTimeout(r, 200)); // a stream destroyed before its file opened closes it once open
    const open = await Promise.all((await readdir('/proc/self/fd')).map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => '')));
    expect(open.filter((path) => path.startsWith(join(work, 'upload-')))).toEqual([]);
  });

  it('says what is missing', async () => {
    await expect(downloadArtifact(minio.client, 's3://artifacts/nope/', join(work, 'x'))).rejects.toThrow('nothing under s3://artifacts/nope/');
    await expect(downloadArtifact(minio.client, 's3://artifacts/nope.jsonl', join(work, 'y'))).rejects.toThrow(/NoSuchKey|does not exist/);
    expect(await readdir(work)).not.toContain('y'); // no empty file where there was no object
  });

  it('refuses keys that are not plain paths below the prefix', () => {
    expect(relativeParts('runs/r1/', 'runs/r1/sub/a.json')).toEqual(['sub', 'a.json']);
    for (const key of ['runs/r1/../../etc/passwd', 'runs/r1/a//b', 'runs/r1/./a', 'other/a']) {
      expect(() => relativeParts('runs/r1/', key)).toThrow(/not a plain path/);
    }
  });

  it('clears a prefix before a retried stage uploads again', async () => {
    expect(await deletePrefix(minio.client, 's3://artifacts/runs/r1/pretrain/model/')).toBe(3);
    expect(await listKeys(minio.client, 's3://artifacts/runs/r1/pretrain/model/')).toEqual([]);
  });
});

/** The chunks of `body` until `bytes` have passed, then the error of a connection reset. */
async function* breakAfter(body: Readable, bytes: number) {
  let passed = 0;
  for await (const chunk of body) {
    yield chunk;
    passed += chunk.length;
    if (passed >= bytes) {
      body.destroy();
      throw Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
    }
  }
}
