// Everything the orchestrator does with S3: URIs, one client, and folder-sized transfers.
// Artifacts are folders (a model, a tokenizer), so the unit here is a prefix, not an object.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, stat, type FileHandle } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import type { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  ListBucketsCommand,
  ListObjectsV2Command,
  NoSuchKey,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import type { Settings } from '../common/settings.js';

export interface S3Location {
  bucket: string;
  key: string;
}

export function parseS3Uri(uri: string): S3Location {
  const match = /^s3:\/\/([^/]+)\/(.*)$/.exec(uri);
  if (!match) throw new Error(`not an s3:// URI: ${uri}`);
  return { bucket: match[1], key: match[2] };
}

export const s3Uri = (bucket: string, key: string) => `s3://${bucket}/${key}`;

const SOCKET_TIMEOUT_MS = 120_000;

/** The S3 client; credentials come from the AWS SDK's usual chain unless given. */
export function createS3Client(settings: Pick<Settings, 'LAWGPT_S3_ENDPOINT' | 'LAWGPT_S3_FORCE_PATH_STYLE' | 'AWS_REGION'>, credentials?: { accessKeyId: string; secretAccessKey: string }) {
  return new S3Client({
    ...(credentials && { credentials }),
    region: settings.AWS_REGION,
    endpoint: settings.LAWGPT_S3_ENDPOINT,
    forcePathStyle: settings.LAWGPT_S3_FORCE_PATH_STYLE === 'true',
    // The SDK's default CRC32 of every upload, computed in JavaScript, costs a third of the
    // throughput (bench P2). Checkpoints carry their own sha256s, checked before any resume, and
    // TLS protects transfers to AWS.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    // A connection that goes silent fails (and is retried) instead of holding a transfer forever;
    // the SDK sets no such limit.
    requestHandler: { socketTimeout: SOCKET_TIMEOUT_MS },
  });
}

export async function ensureBucket(client: S3Client, bucket: string): Promise<void> {
  try {
    await client.send(new HeadBucketCommand({ Bucket: bucket }));
  } catch {
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
  }
}

// S3's answers that mean the credentials, or what they may do, are wrong: no retry can help.
const REFUSALS = new Set(['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AccessDenied', 'InvalidToken', 'ExpiredToken']);

export const isRefusal = (err: unknown): err is Error => err instanceof Error && REFUSALS.has(err.name);

/** One line saying why S3 refuses this client's credentials, or undefined when it accepts them; any other error is thrown. */
export async function credentialsRefusal(client: S3Client): Promise<string | undefined> {
  try {
    await client.send(new ListBucketsCommand({}));
    return undefined;
  } catch (err) {
    if (!isRefusal(err)) throw err;
    return `S3 refused this worker's credentials (${err.name}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY where it runs`;
  }
}

export interface ObjectInfo {
  key: string;
  size: number;
  etag: string;
}

/** The objects whose key starts with the URI's key, a page (of at most `pageSize`, S3's 1,000 by default) at a time. */
async function* objectPages(client: S3Client, uri: string, pageSize?: number): AsyncGenerator<ObjectInfo[]> {
  const { bucket, key: prefix } = parseS3Uri(uri);
  let token: string | undefined;
  do {
    const page = await withRetries(() => client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token, MaxKeys: pageSize })));
    yield (page.Contents ?? []).map((o) => ({ key: o.Key!, size: o.Size ?? 0, etag: o.ETag ?? '' }));
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
}

/** Every object whose key starts with the URI's key. */
async function listObjects(client: S3Client, uri: string): Promise<ObjectInfo[]> {
  const objects: ObjectInfo[] = [];
  for await (const page of objectPages(client, uri)) objects.push(...page);
  return objects;
}

export async function listKeys(client: S3Client, uri: string): Promise<string[]> {
  return (await listObjects(client, uri)).map((o) => o.key);
}

/**
 * Whether an object is part of what an artifact URI names: under a prefix URI every object but a
 * folder marker (a key ending in "/", as the S3 console's "Create folder" makes), else exactly the one.
 */
const partOf = (uri: string, objectKey: string) => (uri.endsWith('/') ? !objectKey.endsWith('/') : objectKey === parseS3Uri(uri).key);

/** What an artifact URI names (partOf). */
export async function artifactObjects(client: S3Client, uri: string): Promise<ObjectInfo[]> {
  return (await listObjects(client, uri)).filter((o) => partOf(uri, o.key));
}

/** Whether an artifact URI names any object, without listing all of a large prefix. */
export async function hasObjects(client: S3Client, uri: string): Promise<boolean> {
  for await (const page of objectPages(client, uri, 100)) {
    if (page.some((o) => partOf(uri, o.key))) return true;
  }
  return false;
}

/** The files under `dir`, as the '/'-separated relative names uploadFiles takes. */
export async function fileNamesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile()).map((e) => relative(dir, join(e.parentPath, e.name)).split(sep).join('/')).sort();
}

export interface TransferStats {
  files: number;
  bytes: number;
}

/**
 * Runs `work` on every item, `limit` at a time. Once one fails no other is started, and the first
 * failure is thrown when those under way have ended: none goes on writing (or filling a disk with)
 * the files of an attempt that has failed.
 */
export async function inParallel<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && next < items.length) {
      try {
        await work(items[next++]);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  const ended = await Promise.allSettled(Array.from({ length: Math.min(limit, items.length) }, worker));
  const failure = ended.find((e) => e.status === 'rejected');
  if (failure) throw failure.reason;
}

// Files are streamed from disk (no copy in memory, unsigned payload): a large one in parts of
// PART_BYTES, several at a time, as `mc` does. Every request, of a transfer or not, is tried up to
// TRIES times with a backoff that outlasts a restart of the server (7.5 s in all): the SDK's own
// three tries are over in well under a second, and a stage that publishes days of training must
// not fail on a listing or a small put in that second. The SDK cannot replay a stream it has
// read, so each try builds its request, and stream, anew.
const PART_BYTES = 32 * 2 ** 20;
const PARALLEL_PARTS = 4;
const TRIES = 5;
// S3 allows at most 10,000 parts per object.
const MAX_PARTS = 10_000;

// What is worth another try: not a request S3 refused as the client's fault (no such key, access
// denied, a precondition failed), which would be refused again.
const worthRetrying = (err: unknown) => (err as { $fault?: string }).$fault !== 'client';

async function withRetries<T>(send: () => Promise<T>, retryable = worthRetrying): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await send();
    } catch (err) {
      if (attempt === TRIES || !retryable(err)) throw err;
      await new Promise((r) => setTimeout(r, 250 * 2 ** attempt));
    }
  }
}

/**
 * Sends a request whose body is `start` to `end` (exclusive) of the file at `path`, and closes the
 * file however the request ends: a request that fails before reading its body to the end (S3 away,
 * a socket timeout) leaves the stream open, and with it the file, whose bytes a full disk then
 * never gets back once the file is deleted, for as long as the worker lives.
 */
async function sendFile<T>(path: string, start: number, end: number, send: (body: Readable) => Promise<T>): Promise<T> {
  const body = createReadStream(path, { start, end: end - 1, highWaterMark: 2 ** 20 });
  try {
    return await send(body);
  } finally {
    body.destroy();
  }
}

/** Uploads a single file, in parallel parts when it is large; returns its size. */
export async function uploadFile(client: S3Client, path: string, uri: string): Promise<number> {
  const { bucket: Bucket, key: Key } = parseS3Uri(uri);
  const size = (await stat(path)).size;
  const part = Math.max(PART_BYTES, Math.ceil(size / MAX_PARTS));
  if (size <= part) {
    // The first `size` bytes, no more: a file still being written (TensorBoard's events) would
    // otherwise outgrow ContentLength.
    const put = (Body: Readable | string) => client.send(new PutObjectCommand({ Bucket, Key, Body, ContentLength: size }));
    await withRetries(() => (size ? sendFile(path, 0, size, put) : put('')));
    return size;
  }
  const { UploadId } = await withRetries(() => client.send(new CreateMultipartUploadCommand({ Bucket, Key })));
  try {
    const parts = Array.from({ length: Math.ceil(size / part) }, (_, i) => ({ PartNumber: i + 1, start: i * part, end: Math.min(size, (i + 1) * part) }));
    const done: { PartNumber: number; ETag?: string }[] = [];
    await inParallel(parts, PARALLEL_PARTS, async ({ PartNumber, start, end }) => {
      const { ETag } = await withRetries(() => sendFile(path, start, end, (Body) => client.send(new UploadPartCommand({ Bucket, Key, UploadId, PartNumber, Body, ContentLength: end - start }))));
      done.push({ PartNumber, ETag });
    });
    done.sort((a, b) => a.PartNumber - b.PartNumber);
    await withRetries(() => client.send(new CompleteMultipartUploadCommand({ Bucket, Key, UploadId, MultipartUpload: { Parts: done } })));
  } catch (err) {
    await client.send(new AbortMultipartUploadCommand({ Bucket, Key, UploadId })).catch(() => undefined);
    throw err;
  }
  return size;
}

// Files of a folder that travel at the same time; each large one is also sent in parallel parts.
const PARALLEL_FILES = 4;

/**
 * Uploads the files `names` (relative paths under `dir`, '/'-separated) below the prefix `uri`
 * (which ends with '/'), several at a time. `last`, one of them, goes up only after every other:
 * its presence says that the folder is complete (a checkpoint's manifest, a blocks folder's index).
 */
export async function uploadFiles(client: S3Client, dir: string, names: string[], uri: string, options: { last?: string } = {}): Promise<TransferStats> {
  const stats = { files: 0, bytes: 0 };
  const put = async (name: string) => {
    stats.bytes += await uploadFile(client, join(dir, ...name.split('/')), uri + name);
    stats.files += 1;
  };
  await inParallel(names.filter((name) => name !== options.last), PARALLEL_FILES, put);
  if (options.last && names.includes(options.last)) await put(options.last);
  return stats;
}

/** Uploads every file under `dir` below the prefix `uri`, keeping relative paths (see uploadFiles). */
export async function uploadDir(client: S3Client, dir: string, uri: string, options: { last?: string } = {}): Promise<TransferStats> {
  return uploadFiles(client, dir, await fileNamesUnder(dir), uri, options);
}

/**
 * Downloads one object to `path`; returns its size, and its sha256 when `hashed` (computed as it
 * arrives, not read back). The SDK retries a request only until its response begins, so a transfer
 * broken or gone silent midway (a 13 GB model, a checkpoint shard) is retried here, asking for the
 * rest of the same version of the object: the bytes from the first one not yet written, If-Match
 * its ETag. A response that fails after its last byte (the SDK checks S3's own checksum of a whole
 * object there) is fetched again from the start.
 */
export async function downloadObject(client: S3Client, bucket: string, key: string, path: string, hashed = false): Promise<{ bytes: number; sha256?: string }> {
  let file: FileHandle | undefined;
  let hash = hashed ? createHash('sha256') : undefined;
  let bytes = 0;
  let whole: { size: number; etag?: string } | undefined;
  // Not the transfer's fault, so not retried: the local disk failing (full, say), a server that
  // answers a range request with other bytes.
  let final: unknown;
  const write = async (chunk: Buffer) => {
    try {
      for (let done = 0; done < chunk.length; ) done += (await file!.write(chunk, done, chunk.length - done, bytes + done)).bytesWritten;
    } catch (err) {
      throw (final = err);
    }
  };
  try {
    await withRetries(
      async () => {
        if (whole && bytes === whole.size) {
          [bytes, whole, hash] = [0, undefined, hashed ? createHash('sha256') : undefined];
          await file!.truncate(0);
        }
        const range = whole && { Range: `bytes=${bytes}-`, IfMatch: whole.etag };
        const object = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key, ...range }));
        const body = object.Body as Readable;
        if (range && !object.ContentRange?.startsWith(`bytes ${bytes}-`)) {
          body.destroy();
          throw (final = new Error(`s3://${bucket}/${key}: asked for the bytes from ${bytes} on, got ${object.ContentRange ?? 'the whole object'}`));
        }
        whole ??= { size: object.ContentLength ?? 0, etag: object.ETag };
        if (!file) {
          await mkdir(dirname(path), { recursive: true });
          file = await open(path, 'w');
        }
        for await (const chunk of body) {
          await write(chunk);
          hash?.update(chunk);
          bytes += chunk.length;
        }
      },
      (err) => err !== final && worthRetrying(err),
    );
  } finally {
    await file?.close();
  }
  return { bytes, ...(hash && { sha256: hash.digest('hex') }) };
}

export class EmptyPrefix extends Error {
  constructor(readonly uri: string) {
    super(`nothing under ${uri}`);
    this.name = 'EmptyPrefix';
  }
}

// The longest file name Linux filesystems take, in bytes: 85 Chinese characters.
const NAME_MAX_BYTES = 255;

/** Whether a key below a prefix can name a file there: AWS S3 accepts keys such as 'a/../../x', 'a//b' and parts of up to 1,024 bytes, which cannot. */
export const isPlainPath = (relativeKey: string) =>
  relativeKey.split('/').every((p) => p !== '' && p !== '.' && p !== '..' && Buffer.byteLength(p) <= NAME_MAX_BYTES);

/** The path segments of `objectKey` below `prefix`, refused unless they are a plain path (isPlainPath). */
export function relativeParts(prefix: string, objectKey: string): string[] {
  const relativeKey = objectKey.slice(prefix.length);
  if (!objectKey.startsWith(prefix) || !isPlainPath(relativeKey)) {
    throw new Error(`refusing to download ${objectKey}: not a plain path below ${prefix}`);
  }
  return relativeKey.split('/');
}

// Objects fetched at the same time: corpora can be many small files, and under ZeRO a checkpoint
// is one or more files per rank.
export const PARALLEL_DOWNLOADS = 8;

/**
 * Downloads an artifact: a prefix URI (ending with '/') becomes the folder `dir`; an object URI
 * becomes the file `dir/<its name>`. Returns the local path the trainer should be given. `listed`,
 * the artifact's objects as artifactObjects found them (keys relative to the URI), saves listing
 * it again, and makes what is downloaded exactly what was listed.
 */
export async function downloadArtifact(client: S3Client, uri: string, dir: string, listed?: ObjectInfo[]): Promise<{ path: string } & TransferStats> {
  const { bucket, key } = parseS3Uri(uri);
  if (!uri.endsWith('/')) {
    const path = join(dir, key.split('/').pop()!);
    return { path, files: 1, bytes: (await downloadObject(client, bucket, key, path)).bytes };
  }
  const keys = listed ? listed.map((o) => key + o.key) : await listKeys(client, uri);
  const files = keys.filter((objectKey) => !objectKey.endsWith('/'));
  if (files.length === 0) throw new EmptyPrefix(uri);
  const stats = { files: files.length, bytes: 0 };
  await inParallel(files, PARALLEL_DOWNLOADS, async (objectKey) => {
    stats.bytes += (await downloadObject(client, bucket, objectKey, join(dir, ...relativeParts(key, objectKey)))).bytes;
  });
  return { path: dir, ...stats };
}

/** One small object's text, or undefined where there is no such object; any other S3 error is thrown. */
export async function getText(client: S3Client, uri: string): Promise<string | undefined> {
  const { bucket, key } = parseS3Uri(uri);
  try {
    return await withRetries(async () => (await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body!.transformToString());
  } catch (err) {
    if (err instanceof NoSuchKey) return undefined;
    throw err;
  }
}

export async function putText(client: S3Client, uri: string, body: string | Buffer, contentType?: string): Promise<void> {
  const { bucket, key } = parseS3Uri(uri);
  await withRetries(() => client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ContentType: contentType })));
}

export const putJson = (client: S3Client, uri: string, value: unknown) => putText(client, uri, JSON.stringify(value), 'application/json');

export async function deleteObject(client: S3Client, uri: string): Promise<void> {
  const { bucket, key } = parseS3Uri(uri);
  await withRetries(() => client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key })));
}

/** Removes every object under a prefix, so a retried stage never leaves a mix of two attempts. */
export async function deletePrefix(client: S3Client, uri: string): Promise<number> {
  const { bucket } = parseS3Uri(uri);
  const keys = await listKeys(client, uri);
  for (let i = 0; i < keys.length; i += 1000) {
    const batch = keys.slice(i, i + 1000).map((Key) => ({ Key }));
    const { Errors } = await withRetries(() => client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: batch, Quiet: true } })));
    if (Errors?.length) throw new Error(`could not delete ${Errors.length} objects under ${uri}, e.g. ${Errors[0].Key}: ${Errors[0].Message}`);
  }
  return keys.length;
}
