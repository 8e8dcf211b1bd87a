// The tokenized-block cache: pretrain's corpus, cleaned, tokenized and packed into blocks, kept in
// S3 so that a retry, a resumed stage or another run on the same data never tokenizes again.
//   key   = sha256(corpus and tokenizer objects' key/size/ETag, block_size, split, cleaning, trainer version)
//   blocks = s3://<bucket>/cache/blocks/<key>/  (the folder of the trainer's `blocks` event)
// The folder holds one file, so an interrupted upload leaves nothing rather than half a cache.
// On a hit the activity hands the folder to the trainer as its `blocks` input.
import type { S3Client } from '@aws-sdk/client-s3';
import type { StageTask } from '../common/run.js';
import { contentHash, inputsHash } from './stage-cache.js';
import { downloadArtifact, EmptyPrefix, s3Uri } from './s3.js';

/** Whether a stage takes pre-tokenized blocks (its config then has a block_size). */
export const usesBlocks = (task: StageTask): task is StageTask & { config: { block_size: number } } => task.stage === 'pretrain';

export async function blocksUri(s3: S3Client, task: StageTask & { config: { block_size: number } }, trainerVersion: string): Promise<string> {
  const key = contentHash({
    inputs: await inputsHash(s3, { corpus: task.inputs.corpus, tokenizer: task.inputs.tokenizer }),
    block_size: task.config.block_size,
    split: task.split,
    cleaning: task.cleaning,
    trainer_version: trainerVersion,
  });
  return s3Uri(task.bucket, `cache/blocks/${key}/`);
}

/** Downloads cached blocks into `dir`; undefined when there are none yet. */
export async function fetchBlocks(s3: S3Client, uri: string, dir: string): Promise<string | undefined> {
  try {
    return (await downloadArtifact(s3, uri, dir)).path;
  } catch (err) {
    if (err instanceof EmptyPrefix) return undefined;
    throw err;
  }
}
