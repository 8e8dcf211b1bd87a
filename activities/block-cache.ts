// The tokenized-block cache: pretrain's corpus, cleaned, tokenized and packed into blocks, kept in
// S3 so that a retry, a resumed stage or another run on the same data never tokenizes again.
//   key    = sha256(corpus and tokenizer objects' key/size/ETag, block_size, split, cleaning, bad-record rules, trainer version)
//   blocks = s3://<bucket>/cache/blocks/<key>/  (the folder of the trainer's `blocks` event: one
//            object per shard, and its index last, so that an interrupted upload is no entry)
// On a hit the activity hands the folder to the trainer as its `blocks` input.
import type { S3Client } from '@aws-sdk/client-s3';
import { BLOCKS_INDEX_FILE } from '../common/contract.js';
import type { StageTask } from '../common/run.js';
import { STAGE_IO } from '../common/stages.js';
import { contentHash, inputsHash } from './stage-cache.js';
import { downloadArtifact, listKeys, parseS3Uri, s3Uri, uploadDir, type ObjectInfo, type TransferStats } from './s3.js';

/** Whether a stage takes pre-tokenized blocks (the contract lists a `blocks` input; its config then has a block_size). */
export const usesBlocks = (task: StageTask): task is StageTask & { config: { block_size: number } } =>
  (STAGE_IO[task.stage].optional as readonly string[]).includes('blocks');

/** Where the task's blocks are cached; `objects` are its inputs' objects, as listed for the inputs hash. */
export function blocksUri(task: StageTask & { config: { block_size: number } }, objects: Record<string, ObjectInfo[]>, trainerVersion: string): string {
  const key = contentHash({
    inputs: inputsHash({ corpus: objects.corpus, tokenizer: objects.tokenizer }),
    block_size: task.config.block_size,
    split: task.split,
    cleaning: task.cleaning,
    records: task.records,
    trainer_version: trainerVersion,
  });
  return s3Uri(task.bucket, `cache/blocks/${key}/`);
}

/** Whether the cache holds the blocks at `uri`: their index, written last, is there. */
export async function hasBlocks(s3: S3Client, uri: string): Promise<boolean> {
  return (await listKeys(s3, uri)).includes(parseS3Uri(uri).key + BLOCKS_INDEX_FILE);
}

/** Downloads cached blocks into `dir`; undefined when there are none yet, or only part of them. */
export async function fetchBlocks(s3: S3Client, uri: string, dir: string): Promise<string | undefined> {
  if (!(await hasBlocks(s3, uri))) return undefined;
  return (await downloadArtifact(s3, uri, dir)).path;
}

/** Caches the trainer's blocks folder at `uri`, its index last. */
export async function storeBlocks(s3: S3Client, dir: string, uri: string): Promise<TransferStats> {
  return uploadDir(s3, dir, uri, { last: BLOCKS_INDEX_FILE });
}
