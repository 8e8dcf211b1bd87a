// The pipeline's stages, in the order they run, and the artifacts each one takes and produces.
// These names are the same in the run config, the trainer CLI, S3 paths, events and the README.
import { z } from 'zod';
import type { RunConfig } from './config.js';

export const STAGES = ['base', 'vocab', 'pretrain', 'sft', 'eval'] as const;
export const StageName = z.enum(STAGES);
export type StageName = z.infer<typeof StageName>;

// Input names are what the trainer finds under `request.inputs` (`optional` ones only when the
// run's data has them; pretrain's `blocks` when the block cache has them, and `compile_cache`
// when the compile cache has an entry for the stage config); output names are the entries it
// reports in its `completed` event, uploaded to s3://<bucket>/runs/<runId>/<stage>/<output>/.
export const STAGE_IO = {
  base: { inputs: [], optional: [], outputs: ['tokenizer', 'model'] },
  vocab: { inputs: ['corpus', 'base_tokenizer'], optional: ['words'], outputs: ['tokenizer'] },
  pretrain: { inputs: ['corpus', 'tokenizer', 'base_model'], optional: ['blocks', 'compile_cache'], outputs: ['model'] },
  // Instruction data in any of four shapes; at least one is required (checked in the run config).
  sft: { inputs: ['model'], optional: ['dialogue', 'exam', 'instructions', 'knowledge', 'compile_cache'], outputs: ['adapter', 'model'] },
  eval: { inputs: ['model', 'corpus'], optional: ['exam', 'short_answer', 'base_model', 'pretrained_model'], outputs: ['report'] },
} as const satisfies Record<StageName, { inputs: readonly string[]; optional: readonly string[]; outputs: readonly string[] }>;

// Inputs a trainer does without when another stands in for it, as input -> stand-in: pretrain
// given its tokenized `blocks` (from the block cache) never reads the `corpus`, so a request may
// leave the corpus out, and the activity then downloads none (20-50 GB at LaWGPT's scale).
export const STAND_INS: Partial<Record<StageName, Record<string, string>>> = { pretrain: { corpus: 'blocks' } };

// Inputs that are tokenizer folders: the trainer checks them for a tokenizer alone, and a model
// folder given as one is downloaded without its weights.
export const TOKENIZER_INPUTS = ['base_tokenizer', 'tokenizer'] as const;

// Inputs that are an earlier stage's outputs, as [stage, output]. A run takes each from that stage
// when it runs it, or else from the config's `artifacts` (a published model, an earlier run's
// output); optional ones may be absent altogether.
export const UPSTREAM = {
  base: {},
  vocab: { base_tokenizer: ['base', 'tokenizer'] },
  pretrain: { tokenizer: ['vocab', 'tokenizer'], base_model: ['base', 'model'] },
  sft: { model: ['pretrain', 'model'] },
  eval: { model: ['sft', 'model'], base_model: ['base', 'model'], pretrained_model: ['pretrain', 'model'] },
} as const satisfies Record<StageName, Record<string, readonly [StageName, string]>>;

/** A stage's inputs that come from earlier stages, as [input, [stage, output]]. */
export const upstreamOf = (stage: StageName) => Object.entries(UPSTREAM[stage]) as [string, readonly [StageName, string]][];

/** Output name -> S3 URI (or local path), per stage that has produced them. */
export type StageOutputs = Partial<Record<StageName, Record<string, string>>>;

// Which of the run's data each stage reads; its other inputs are earlier stages' outputs (UPSTREAM).
const DATA_INPUTS: { [S in StageName]: (data: RunConfig['data']) => Record<string, string | undefined> } = {
  base: () => ({}),
  vocab: (data) => ({ corpus: data.corpus, words: data.vocab_words }),
  pretrain: (data) => ({ corpus: data.corpus }),
  sft: (data) => ({ dialogue: data.dialogue, exam: data.exam, instructions: data.instructions, knowledge: data.knowledge }),
  eval: (data) => ({ corpus: data.corpus, exam: data.exam, short_answer: data.short_answer }),
};

/** The names of the inputs a stage takes from the run's data (text, where the others are models and tokenizers). */
export const dataInputNames = (stage: StageName): string[] => Object.keys(DATA_INPUTS[stage]({} as RunConfig['data']));

/** A stage's inputs: the run's data, and the outputs of earlier stages or given artifacts; optional ones this run lacks are left out. */
export function inputsOf(stage: StageName, data: RunConfig['data'], done: StageOutputs): Record<string, string> {
  const upstream = upstreamOf(stage).map(([input, [from, output]]) => [input, done[from]?.[output]]);
  const inputs = { ...DATA_INPUTS[stage](data), ...Object.fromEntries(upstream) };
  return Object.fromEntries(Object.entries(inputs).filter((entry): entry is [string, string] => entry[1] !== undefined));
}
