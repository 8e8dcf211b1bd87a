// Checkpoints in S3. The trainer hands over finished checkpoint folders (with manifest.json);
// here they are uploaded with the manifest LAST, so a checkpoint is visible only once complete,
// older ones are pruned, and a retried stage finds the newest one that verifies.
//   s3://<bucket>/runs/<runId>/<stage>/checkpoints/checkpoint-<step>/{...files, manifest.json}
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { NoSuchKey, type S3Client } from '@aws-sdk/client-s3';
import { describeIssues } from '../common/config.js';
import { CheckpointManifest, MANIFEST_FILE } from '../common/contract.js';
import type { KeptCheckpoint } from '../common/report.js';
import type { StageTask } from '../common/run.js';
import { deleteObject, deletePrefix, downloadObject, getText, inParallel, listKeys, PARALLEL_DOWNLOADS, parseS3Uri, relativeParts, s3Uri, uploadFiles } from './s3.js';

const CHECKPOINT_DIR = /checkpoints\/checkpoint-(\d+)\/$/;

export const checkpointsPrefix = (task: Pick<StageTask, 'bucket' | 'runId' | 'stage'>) =>
  s3Uri(task.bucket, `runs/${task.runId}/${task.stage}/checkpoints/`);

export interface CommittedCheckpoint {
  step: number;
  uri: string;
  /** The held-out loss its manifest records, where the stage evaluates. */
  evalLoss?: number;
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk);
  return hash.digest('hex');
}

/** Checkpoint folders under the stage's prefix, newest first, each with whether it has a manifest. */
async function listCheckpoints(s3: S3Client, prefix: string): Promise<{ step: number; uri: string; committed: boolean }[]> {
  const { bucket } = parseS3Uri(prefix);
  const folders = new Map<number, { uri: string; committed: boolean }>();
  for (const key of await listKeys(s3, prefix)) {
    const folder = key.slice(0, key.lastIndexOf('/') + 1);
    const match = CHECKPOINT_DIR.exec(folder);
    if (!match) continue;
    const entry = folders.get(Number(match[1])) ?? { uri: s3Uri(bucket, folder), committed: false };
    entry.committed ||= key === folder + MANIFEST_FILE;
    folders.set(Number(match[1]), entry);
  }
  return [...folders.entries()].map(([step, f]) => ({ step, ...f })).sort((a, b) => b.step - a.step);
}

export interface UploadListener {
  committed(checkpoint: CommittedCheckpoint): void;
  /** An upload that failed and is tried again in `seconds`, S3 being away for longer than a transfer's own retries. */
  retrying(step: number, error: Error, seconds: number): void;
  /** A checkpoint given up: broken on disk, superseded by a newer one while S3 was away, or S3 away for all its tries. */
  failed(step: number, error: Error): void;
}

// A checkpoint whose upload fails is tried again after 10 s, doubling up to 5 minutes, 8 tries in
// all (about 15 minutes): it is the point a crash would resume from, and training goes on while
// it waits. A newer one waiting in the queue supersedes it at once, so the disk holds no more
// checkpoints for S3 being away.
const COMMIT_TRIES = 8;
const FIRST_RETRY_MS = 10_000;
const LONGEST_RETRY_MS = 5 * 60_000;

/**
 * Uploads checkpoints one after another in the background while training goes on. Each one's
 * files go up in parallel, its manifest last; then checkpoints beyond the newest `keep` are
 * deleted (manifest first, so none is ever half-visible) and the local copy is removed.
 */
export class CheckpointUploader {
  private queue: Promise<void> = Promise.resolve();
  private waiting = 0;
  private wake: (() => void) | undefined;
  committed: CommittedCheckpoint | undefined;

  constructor(
    private readonly s3: S3Client,
    private readonly prefix: string,
    private readonly keep: number,
    private readonly listener: UploadListener,
    private readonly firstRetryMs = FIRST_RETRY_MS,
  ) {}

  submit(step: number, localDir: string): void {
    this.waiting++;
    this.wake?.();
    const upload = () => {
      this.waiting--;
      return this.upload(step, localDir).catch(async (err: Error) => {
        this.listener.failed(step, err);
        // Lost for good: keeping it would only fill the disk while S3 is away.
        await rm(localDir, { recursive: true, force: true });
      });
    };
    this.queue = this.queue.then(upload);
  }

  /** Resolves once every submitted checkpoint is committed or has failed. */
  drain(): Promise<void> {
    return this.queue;
  }

  private async upload(step: number, localDir: string): Promise<void> {
    // Read and checked once: a checkpoint broken on disk fails the same way at every try.
    const manifest = CheckpointManifest.parse(JSON.parse(await readFile(join(localDir, MANIFEST_FILE), 'utf8')));
    await Promise.all(manifest.files.map((f) => stat(join(localDir, ...f.path.split('/')))));
    const uri = `${this.prefix}checkpoint-${step}/`;
    for (let tried = 1; ; tried++) {
      try {
        await uploadFiles(this.s3, localDir, [...manifest.files.map((f) => f.path), MANIFEST_FILE], uri, { last: MANIFEST_FILE });
        break;
      } catch (err) {
        if (tried === COMMIT_TRIES || this.waiting > 0) throw err;
        const ms = Math.min(this.firstRetryMs * 2 ** (tried - 1), LONGEST_RETRY_MS);
        this.listener.retrying(step, err as Error, ms / 1000);
        await this.pause(ms);
        if (this.waiting > 0) throw err;
      }
    }
    this.committed = { step, uri, ...(manifest.eval_loss !== undefined && { evalLoss: manifest.eval_loss }) };
    this.listener.committed(this.committed);
    await rm(localDir, { recursive: true, force: true });
    await this.prune(step);
  }

  /** Waits `ms`, or until a newer checkpoint is submitted. */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wake = done;
    });
  }

  private async prune(newest: number): Promise<void> {
    const all = await listCheckpoints(this.s3, this.prefix);
    const kept = retention(await committedManifests(this.s3, all), this.keep);
    for (const old of all.filter((c) => c.step < newest && !kept.has(c.step))) {
      await deleteObject(this.s3, old.uri + MANIFEST_FILE);
      await deletePrefix(this.s3, old.uri);
    }
  }
}

/** The committed checkpoints' manifests, newest first. */
async function committedManifests(s3: S3Client, all: Awaited<ReturnType<typeof listCheckpoints>>): Promise<{ uri: string; manifest: CheckpointManifest }[]> {
  const found = [];
  for (const c of all.filter((c) => c.committed)) {
    const { manifest } = await readManifest(s3, c.uri);
    if (manifest) found.push({ uri: c.uri, manifest });
  }
  return found;
}

/**
 * Which checkpoints retention keeps, and why: the newest `keep`, and the one with the best
 * held-out loss (the model a long run is likeliest to want back).
 */
export function retention(committed: { manifest: Pick<CheckpointManifest, 'step' | 'eval_loss'> }[], keep: number): Map<number, ('newest' | 'best')[]> {
  const reasons = new Map<number, ('newest' | 'best')[]>();
  const newestFirst = [...committed].sort((a, b) => b.manifest.step - a.manifest.step);
  for (const c of newestFirst.slice(0, keep)) reasons.set(c.manifest.step, ['newest']);
  const scored = newestFirst.filter((c) => c.manifest.eval_loss !== undefined);
  if (scored.length) {
    const best = scored.reduce((a, b) => (b.manifest.eval_loss! < a.manifest.eval_loss! ? b : a)).manifest.step;
    reasons.set(best, [...(reasons.get(best) ?? []), 'best']);
  }
  return reasons;
}

/** The checkpoints a stage keeps in S3, newest first, with why each is kept. */
export async function keptCheckpoints(s3: S3Client, prefix: string, keep: number): Promise<KeptCheckpoint[]> {
  const committed = await committedManifests(s3, await listCheckpoints(s3, prefix));
  const reasons = retention(committed, keep);
  return committed.map(({ uri, manifest }) => ({
    step: manifest.step,
    uri,
    ...(manifest.eval_loss !== undefined && { eval_loss: manifest.eval_loss }),
    trainer_version: manifest.trainer_version,
    kept_as: reasons.get(manifest.step) ?? [],
  }));
}

export interface ResumePoint {
  step: number;
  path: string;
}

/**
 * Downloads the newest committed checkpoint whose files all match their manifest. A checkpoint
 * that does not verify is reported through `warn` and skipped, and the one before it is tried.
 */
export async function findResumePoint(
  s3: S3Client,
  prefix: string,
  dir: string,
  warn: (message: string) => void,
): Promise<ResumePoint | undefined> {
  for (const checkpoint of (await listCheckpoints(s3, prefix)).filter((c) => c.committed)) {
    const local = join(dir, `checkpoint-${checkpoint.step}`);
    const problem = await downloadVerified(s3, checkpoint.uri, local);
    if (!problem) return { step: checkpoint.step, path: local };
    warn(`checkpoint-${checkpoint.step} at ${checkpoint.uri} is unusable (${problem}); trying the one before it`);
    await rm(local, { recursive: true, force: true });
  }
  return undefined;
}

async function readManifest(s3: S3Client, uri: string): Promise<{ body: string; manifest?: CheckpointManifest; problem?: string }> {
  const body = await getText(s3, uri + MANIFEST_FILE);
  if (body === undefined) return { body: '', problem: 'manifest is gone' };
  let parsed;
  try {
    parsed = CheckpointManifest.safeParse(JSON.parse(body));
  } catch {
    return { body, problem: 'manifest is not JSON' };
  }
  if (!parsed.success) return { body, problem: `invalid manifest: ${describeIssues(parsed.error).join('; ')}` };
  return { body, manifest: parsed.data };
}

/**
 * Downloads the checkpoint at `uri` into `local`, several files at a time, each hashed as it
 * arrives; returns what is wrong with it, if anything (the first wrong file in the manifest's
 * order; once one is found no other file is started).
 */
export async function downloadVerified(s3: S3Client, uri: string, local: string): Promise<string | undefined> {
  const { body, manifest, problem } = await readManifest(s3, uri);
  if (!manifest) return problem;
  const { bucket, key } = parseS3Uri(uri);
  let files;
  try {
    files = manifest.files.map((file, index) => ({ ...file, index, parts: relativeParts('', file.path) }));
  } catch (err) {
    return (err as Error).message;
  }
  const problems: string[] = [];
  await inParallel(files, PARALLEL_DOWNLOADS, async (file) => {
    if (problems.length) return;
    let downloaded;
    try {
      downloaded = await downloadObject(s3, bucket, key + file.path, join(local, ...file.parts), true);
    } catch (err) {
      // A missing file means a partial checkpoint; any other error is S3 being unwell, which a
      // retry of the activity should meet again rather than fall back to an older checkpoint.
      if (!(err instanceof NoSuchKey)) throw err;
      problems[file.index] = `${file.path} is missing`;
      return;
    }
    if (downloaded.bytes !== file.size) problems[file.index] = `${file.path} has ${downloaded.bytes} bytes, the manifest says ${file.size}`;
    else if (downloaded.sha256 !== file.sha256) problems[file.index] = `${file.path} does not match its sha256`;
  });
  const wrong = problems.find((p) => p !== undefined);
  if (wrong) return wrong;
  await mkdir(local, { recursive: true });
  // The trainer checks the manifest too (world size, config) before resuming.
  await writeFile(join(local, MANIFEST_FILE), body);
  return undefined;
}
