// Everything the orchestrator does with S3: URIs, one client, and folder-sized transfers.
// Artifacts are folders (a model, a tokenizer), so the unit here is a prefix, not an object.
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, stat } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  ListObjectsV2Command,
  S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
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

export function createS3Client(settings: Pick<Settings, 'LAWGPT_S3_ENDPOINT' | 'LAWGPT_S3_FORCE_PATH_STYLE' | 'AWS_REGION'>) {
  return new S3Client({
    region: settings.AWS_REGION,
    endpoint: settings.LAWGPT_S3_ENDPOINT,
    forcePathStyle: settings.LAWGPT_S3_FORCE_PATH_STYLE === 'true',
  });
}

export async function ensureBucket(client: S3Client, bucket: string): Promise<void> {
  try {
    await client.send(new HeadBucketCommand({ Bucket: bucket }));
  } catch {
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
  }
}

export interface ObjectInfo {
  key: string;
  size: number;
  etag: string;
}

/** Every object whose key starts with the URI's key. */
async function listObjects(client: S3Client, uri: string): Promise<ObjectInfo[]> {
  const { bucket, key: prefix } = parseS3Uri(uri);
  const objects: ObjectInfo[] = [];
  let token: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    objects.push(...(page.Contents ?? []).map((o) => ({ key: o.Key!, size: o.Size ?? 0, etag: o.ETag ?? '' })));
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return objects;
}

export async function listKeys(client: S3Client, uri: string): Promise<string[]> {
  return (await listObjects(client, uri)).map((o) => o.key);
}

/** What an artifact URI names: the objects under a prefix URI, or exactly the one object. */
export async function artifactObjects(client: S3Client, uri: string): Promise<ObjectInfo[]> {
  const { key } = parseS3Uri(uri);
  const objects = await listObjects(client, uri);
  return uri.endsWith('/') ? objects : objects.filter((o) => o.key === key);
}

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name)).sort();
}

export interface TransferStats {
  files: number;
  bytes: number;
}

/** Uploads a single file (multipart when large). */
export async function uploadFile(client: S3Client, path: string, uri: string): Promise<number> {
  const { bucket, key } = parseS3Uri(uri);
  const body = createReadStream(path);
  try {
    await new Upload({ client, params: { Bucket: bucket, Key: key, Body: body } }).done();
  } finally {
    body.destroy();
  }
  return (await stat(path)).size;
}

// Files of a folder that travel at the same time; each large one is also sent in parallel parts.
const PARALLEL_FILES = 4;

/** Runs `work` on every item, `limit` at a time. */
async function inParallel<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await work(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

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
  const names = (await filesUnder(dir)).map((path) => relative(dir, path).split(sep).join('/'));
  return uploadFiles(client, dir, names, uri, options);
}

async function downloadObject(client: S3Client, bucket: string, key: string, path: string): Promise<number> {
  const object = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  await mkdir(dirname(path), { recursive: true });
  await pipeline(object.Body as Readable, createWriteStream(path));
  return object.ContentLength ?? 0;
}

export class EmptyPrefix extends Error {
  constructor(readonly uri: string) {
    super(`nothing under ${uri}`);
    this.name = 'EmptyPrefix';
  }
}

/** The path segments of `objectKey` below `prefix`; AWS S3 accepts keys such as 'a/../../x', so check. */
export function relativeParts(prefix: string, objectKey: string): string[] {
  const parts = objectKey.slice(prefix.length).split('/');
  if (!objectKey.startsWith(prefix) || parts.some((p) => p === '..' || p === '.' || p === '')) {
    throw new Error(`refusing to download ${objectKey}: not a plain path below ${prefix}`);
  }
  return parts;
}

/**
 * Downloads an artifact: a prefix URI (ending with '/') becomes the folder `dir`; an object URI
 * becomes the file `dir/<its name>`. Returns the local path the trainer should be given.
 */
export async function downloadArtifact(client: S3Client, uri: string, dir: string): Promise<{ path: string } & TransferStats> {
  const { bucket, key } = parseS3Uri(uri);
  const stats = { files: 0, bytes: 0 };
  if (!uri.endsWith('/')) {
    const path = join(dir, key.split('/').pop()!);
    stats.bytes = await downloadObject(client, bucket, key, path);
    return { path, files: 1, bytes: stats.bytes };
  }
  for (const objectKey of await listKeys(client, uri)) {
    if (objectKey.endsWith('/')) continue;
    stats.bytes += await downloadObject(client, bucket, objectKey, join(dir, ...relativeParts(key, objectKey)));
    stats.files += 1;
  }
  if (stats.files === 0) throw new EmptyPrefix(uri);
  return { path: dir, ...stats };
}

export async function deleteObject(client: S3Client, uri: string): Promise<void> {
  const { bucket, key } = parseS3Uri(uri);
  await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
}

/** Removes every object under a prefix, so a retried stage never leaves a mix of two attempts. */
export async function deletePrefix(client: S3Client, uri: string): Promise<number> {
  const { bucket } = parseS3Uri(uri);
  const keys = await listKeys(client, uri);
  for (let i = 0; i < keys.length; i += 1000) {
    const batch = keys.slice(i, i + 1000).map((Key) => ({ Key }));
    const { Errors } = await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: batch, Quiet: true } }));
    if (Errors?.length) throw new Error(`could not delete ${Errors.length} objects under ${uri}, e.g. ${Errors[0].Key}: ${Errors[0].Message}`);
  }
  return keys.length;
}
