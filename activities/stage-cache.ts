// The stage cache: a stage whose inputs, config and trainer are exactly those of an earlier
// completed stage is not run again; its recorded outputs are used.
//   key   = sha256(stage, config section, split, cleaning, bad-record rules, trainer version, every input
//           object's key/size/ETag, as inputObjects lists what the stage downloads)
//   entry = s3://<bucket>/cache/<stage>/<key>.json, written after the stage's outputs are uploaded
// An entry counts only while every output object it lists is still there, unchanged.
import { createHash } from 'node:crypto';
import type { S3Client } from '@aws-sdk/client-s3';
import { z } from 'zod';
import type { StageResult, StageTask } from '../common/run.js';
import { StageName, TOKENIZER_INPUTS } from '../common/stages.js';
import { artifactObjects, getText, parseS3Uri, putJson, s3Uri, type ObjectInfo } from './s3.js';

const ObjectList = z.array(z.object({ key: z.string(), size: z.number(), etag: z.string() }));
const CacheEntry = z.object({
  key: z.string(),
  run_id: z.string(),
  result: z.object({ stage: StageName, outputs: z.record(z.string(), z.string()), metrics: z.record(z.string(), z.number()) }),
  objects: z.record(z.string(), ObjectList),
});

const entryUri = (task: Pick<StageTask, 'bucket' | 'stage'>, key: string) => s3Uri(task.bucket, `cache/${task.stage}/${key}.json`);

const sameObjects = (a: ObjectInfo[], b: ObjectInfo[]) =>
  JSON.stringify([...a].sort((x, y) => x.key.localeCompare(y.key))) === JSON.stringify([...b].sort((x, y) => x.key.localeCompare(y.key)));

// A tokenizer input may be a whole model's folder (configs/lawgpt.json gives LLaMA-7B's as the base
// tokenizer): its weights, 13.5 GB where the tokenizer is under 1 MB, are no part of the input.
const WEIGHTS = /\.(safetensors|bin|pt|pth|ckpt|h5|msgpack|gguf)$|\.index\.json$/;
const partOfInput = (name: string, key: string) => !(TOKENIZER_INPUTS as readonly string[]).includes(name) || !WEIGHTS.test(key);

/** Every input object's key (below its URI), size and ETag, by input name: what is downloaded for the stage. */
export async function inputObjects(s3: S3Client, inputs: Record<string, string>): Promise<Record<string, ObjectInfo[]>> {
  const objects: Record<string, ObjectInfo[]> = {};
  for (const name of Object.keys(inputs).sort()) {
    const below = parseS3Uri(inputs[name]).key.length;
    const listed = (await artifactObjects(s3, inputs[name])).map(({ key, size, etag }) => ({ key: key.slice(below), size, etag }));
    objects[name] = listed.filter((o) => partOfInput(name, o.key));
  }
  return objects;
}

/** sha256 of a value's canonical JSON: equal values, equal keys. */
export const contentHash = (value: unknown) => createHash('sha256').update(canonicalJson(value)).digest('hex');

/** Identifies the exact input artifacts of a stage: a checkpoint is only resumed under the same ones. */
export const inputsHash = (objects: Record<string, ObjectInfo[]>) => contentHash(objects);

/** The stage's key; `objects` are its inputs' objects (inputObjects). */
export const cacheKey = (task: StageTask, objects: Record<string, ObjectInfo[]>, trainerVersion: string) =>
  contentHash({ stage: task.stage, config: task.config, split: task.split, cleaning: task.cleaning, records: task.records, trainer_version: trainerVersion, inputs: objects });

/** JSON with sorted keys, so equal values always hash alike. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/**
 * The cached result for `key`, if its entry exists and all of its outputs are intact. Only a
 * missing or unreadable entry is a miss: an S3 error is thrown for the activity's retries, since
 * a miss would rerun a stage that may take days.
 */
export async function lookupStage(s3: S3Client, task: StageTask, key: string, warn: (m: string) => void): Promise<StageResult | undefined> {
  const uri = entryUri(task, key);
  const body = await getText(s3, uri);
  if (body === undefined) return undefined;
  let entry;
  try {
    entry = CacheEntry.parse(JSON.parse(body));
  } catch (err) {
    warn(`ignoring unreadable cache entry ${uri}: ${(err as Error).message}`);
    return undefined;
  }
  for (const [name, uri] of Object.entries(entry.result.outputs)) {
    if (!sameObjects(await artifactObjects(s3, uri), entry.objects[name] ?? [])) {
      warn(`cache entry for ${task.stage} names ${uri}, which has changed since; running the stage`);
      return undefined;
    }
  }
  return { ...entry.result, cachedFrom: entry.run_id };
}

export async function recordStage(s3: S3Client, task: StageTask, key: string, result: StageResult): Promise<void> {
  const objects: Record<string, ObjectInfo[]> = {};
  for (const [name, uri] of Object.entries(result.outputs)) objects[name] = await artifactObjects(s3, uri);
  await putJson(s3, entryUri(task, key), { key, run_id: task.runId, result, objects });
}
