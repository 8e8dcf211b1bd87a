// The pipeline's stages, in the order they run, and the artifacts each one takes and produces.
// These names are the same in the run config, the trainer CLI, S3 paths, events and the README.
import { z } from 'zod';

export const STAGES = ['base', 'vocab', 'pretrain', 'sft', 'eval'] as const;
export const StageName = z.enum(STAGES);
export type StageName = z.infer<typeof StageName>;

// Input names are what the trainer finds under `request.inputs`; output names are the entries
// it reports in its `completed` event, uploaded to s3://<bucket>/runs/<runId>/<stage>/<output>/.
export const STAGE_IO = {
  base: { inputs: [], outputs: ['tokenizer', 'model'] },
  vocab: { inputs: ['corpus', 'base_tokenizer'], outputs: ['tokenizer'] },
  pretrain: { inputs: ['corpus', 'tokenizer', 'base_model'], outputs: ['model'] },
  sft: { inputs: ['model', 'dialogue', 'exam'], outputs: ['adapter', 'model'] },
  eval: { inputs: ['model', 'corpus', 'exam'], outputs: ['report'] },
} as const satisfies Record<StageName, { inputs: readonly string[]; outputs: readonly string[] }>;
