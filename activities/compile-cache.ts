// The compile cache: what torch.compile made of a training stage's decoder layers, kept in S3 so
// that a fresh worker's compiled launch starts warm (trainer-py/lawgpt_trainer/compile_cache.py).
//   key   = sha256(stage, the stage config less what does not shape its graphs, trainer version)
//   parts = s3://<bucket>/cache/compile/<key>/<torch build and device>.<digest>.bin, each what one
//           trainer offered when it had compiled graphs no part held; a trainer loads its kind's parts
// torch checks every entry against the graph it compiles, so a stale part costs a compile, never a
// wrong kernel; the key keeps stages that compile other graphs from downloading each other's parts.
// A compile cache that cannot be read or written is a cold compile, not a failed stage.
import { basename } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import type { StageTask } from '../common/run.js';
import { contentHash } from './stage-cache.js';
import { downloadArtifact, EmptyPrefix, s3Uri, uploadFile } from './s3.js';

/** Whether the stage may compile its layers (`compile` true, or "auto", which the trainer decides on its device). */
export const usesCompileCache = (task: StageTask): boolean => 'compile' in task.config && task.config.compile !== false;

// Settings that decide how long and how a stage learns, on which hosts, what it logs and reads, but
// not what its layers compile to: runs that differ only in these share their parts.
const NOT_COMPILED = [
  'max_steps', 'epochs', 'gradient_accumulation_steps', 'global_batch_size', 'learning_rate', 'warmup_steps', 'logging_steps',
  'checkpoint_steps', 'seed', 'eval_blocks', 'profiler', 'dialogue_answers', 'max_dialogue_records', 'max_exam_records', 'max_instruction_records',
  'max_knowledge_records',
];
const NOT_COMPILED_DEEPSPEED = ['hosts', 'master_addr', 'master_port'];

const without = (settings: object, names: string[]) => Object.fromEntries(Object.entries(settings).filter(([name]) => !names.includes(name)));

/** The folder of the compile cache for this stage config and trainer version. */
export function compileCacheUri(task: StageTask, trainerVersion: string): string {
  const config = without(task.config, NOT_COMPILED);
  if ('deepspeed' in task.config && task.config.deepspeed) config.deepspeed = without(task.config.deepspeed, NOT_COMPILED_DEEPSPEED);
  const key = contentHash({ stage: task.stage, config, trainer_version: trainerVersion });
  return s3Uri(task.bucket, `cache/compile/${key}/`);
}

/** Downloads the compile cache's files into `dir`; undefined when it has none yet. */
export async function fetchCompileCache(s3: S3Client, uri: string, dir: string): Promise<string | undefined> {
  try {
    return (await downloadArtifact(s3, uri, dir)).path;
  } catch (err) {
    if (err instanceof EmptyPrefix) return undefined;
    throw err;
  }
}

/** Stores a part the trainer offered in the compile cache, under its own name. */
export async function storeCompileCache(s3: S3Client, file: string, uri: string): Promise<string> {
  const target = uri + basename(file);
  await uploadFile(s3, file, target);
  return target;
}
