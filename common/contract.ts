// The contract between the orchestrator and the trainer, written down once.
//
//   python -m lawgpt_trainer <stage> --request <request.json> [--wait-for-request]
//
// The trainer reads a TrainerRequest, writes one TrainerEvent per line (JSON) on stdout and
// nothing else there; logs go to stderr. Exit code 0 after a `completed` event is success;
// EXIT_INVALID_INPUT means retrying cannot help (bad config or data); any other code is a
// failure a retry may fix. `npm run contract` regenerates trainer-py's JSON Schema from this file,
// and both test suites check against it.
import { z } from 'zod';
import { CleaningConfig, MaxLineChars, OnBadRecord, SplitConfig, STAGE_CONFIGS } from './config.js';
import { StageName, STAGE_IO, STAGES, STAND_INS, TOKENIZER_INPUTS } from './stages.js';

export const CONTRACT_VERSION = 1;
export const EXIT_INVALID_INPUT = 2;
// 128 + SIGTERM: stopped on request after handing over a final checkpoint.
export const EXIT_INTERRUPTED = 143;

/**
 * The arguments after `python -m lawgpt_trainer`. With `waitForRequest` the trainer imports its
 * stage's code first and then waits for the request file to appear, so the orchestrator can start
 * it before the inputs are downloaded and rename the request into place once they are.
 */
export function trainerArgs(stage: StageName, requestPath: string, waitForRequest = false): string[] {
  return [stage, '--request', requestPath, ...(waitForRequest ? ['--wait-for-request'] : [])];
}

const RequestCommon = {
  contract_version: z.literal(CONTRACT_VERSION),
  run_id: z.string().min(1),
  output_dir: z.string().min(1),
  split: SplitConfig,
  cleaning: CleaningConfig,
  on_bad_record: OnBadRecord,
  max_line_chars: MaxLineChars,
  // A verified checkpoint folder (with its manifest.json) to continue training from.
  resume_from: z.string().min(1).optional(),
  // Identifies the exact input artifacts (sha256 of their S3 keys, sizes and ETags): a checkpoint
  // records it, and is not resumed under other inputs (another base model, say).
  inputs_hash: z.string().min(1).optional(),
  // Created by the orchestrator to stop training: every process saves a checkpoint at the same
  // step and exits as if SIGTERMed. Under the DeepSpeed launcher it is the only way to ask.
  stop_file: z.string().min(1).optional(),
};

/** A stage's inputs: each required one, or where it has a stand-in (STAND_INS), it or its stand-in. */
function inputsFor(stage: StageName) {
  const standIns = Object.entries(STAND_INS[stage] ?? {});
  const inputs = z
    .object(
      Object.fromEntries([
        ...STAGE_IO[stage].inputs.map((name) => [name, STAND_INS[stage]?.[name] ? z.string().min(1).optional() : z.string().min(1)]),
        ...STAGE_IO[stage].optional.map((name) => [name, z.string().min(1).optional()]),
      ]),
    )
    .strict();
  if (!standIns.length) return inputs;
  return inputs
    .refine((given) => standIns.every(([input, standIn]) => given[input] !== undefined || given[standIn] !== undefined), {
      message: standIns.map(([input, standIn]) => `${input} or ${standIn} is required`).join('; '),
      // Said beside the other problems of the inputs, a missing model say, not only once they are fixed.
      when: (payload) => typeof payload.value === 'object' && payload.value !== null,
    })
    .meta({ allOf: standIns.map(([input, standIn]) => ({ anyOf: [{ required: [input] }, { required: [standIn] }] })) });
}

function requestFor<S extends StageName>(stage: S) {
  return z.object({ ...RequestCommon, stage: z.literal(stage), inputs: inputsFor(stage), config: STAGE_CONFIGS[stage] }).strict();
}

export const TrainerRequest = z.discriminatedUnion(
  'stage',
  STAGES.map((s) => requestFor(s)) as unknown as [ReturnType<typeof requestFor<'base'>>],
);
export type TrainerRequest = z.infer<typeof TrainerRequest>;

const finite = z.number().finite();

export const TrainerEvent = z.discriminatedUnion('event', [
  z.object({ event: z.literal('started'), stage: StageName, trainer_version: z.string(), pid: z.number().int() }).strict(),
  z
    .object({
      event: z.literal('progress'),
      step: z.number().int().nonnegative(),
      total_steps: z.number().int().positive(),
      loss: finite.optional(),
      learning_rate: finite.optional(),
    })
    .strict(),
  z
    .object({
      event: z.literal('checkpoint'),
      step: z.number().int().positive(),
      // Folder under output_dir, complete and with its manifest.json: from here on it belongs to
      // the orchestrator, which uploads it (manifest last) and then deletes it.
      path: z.string().min(1),
      // What the save cost the training: seconds from the end of the step (or of its held-out
      // evaluation) until every rank had written its files. The manifest's hashing comes after,
      // beside the training.
      save_seconds: finite.nonnegative(),
    })
    .strict(),
  z
    .object({
      event: z.literal('blocks'),
      // Folder under output_dir with the cleaned, tokenized, packed corpus (shards and, written
      // last, BLOCKS_INDEX_FILE), ready to be cached and given back as the `blocks` input, so
      // that no later attempt tokenizes again.
      path: z.string().min(1),
    })
    .strict(),
  z
    .object({
      event: z.literal('compile_cache'),
      // File under output_dir with what torch.compile made of the stage's layers since the last
      // such event, a part named `<torch build and device>.<digest>.bin`: the orchestrator keeps
      // it in the compile cache, whose folder of parts is the `compile_cache` input of the same
      // stage config's later attempts and runs.
      path: z.string().min(1),
    })
    .strict(),
  z.object({ event: z.literal('log'), level: z.enum(['info', 'warning']), message: z.string() }).strict(),
  z
    .object({
      event: z.literal('completed'),
      // Output name -> path relative to output_dir; names are STAGE_IO[stage].outputs.
      outputs: z.record(z.string(), z.string()),
      metrics: z.record(z.string(), finite),
    })
    .strict(),
  // `interrupted`: stopped by SIGTERM after saving a checkpoint (cancellation, pause, shutdown).
  z.object({ event: z.literal('failed'), kind: z.enum(['invalid_input', 'internal', 'interrupted']), message: z.string() }).strict(),
]);
export type TrainerEvent = z.infer<typeof TrainerEvent>;

/**
 * A checkpoint's manifest.json, written by the trainer into the checkpoint folder once every file
 * is saved, and uploaded to S3 after all of them: a checkpoint without a valid manifest whose
 * sizes and hashes match does not exist.
 *   s3://<bucket>/runs/<runId>/<stage>/checkpoints/checkpoint-<step>/{...files, manifest.json}
 */
export const CheckpointManifest = z
  .object({
    manifest_version: z.literal(1),
    run_id: z.string().min(1),
    stage: StageName,
    step: z.number().int().positive(),
    world_size: z.number().int().positive(),
    // sha256 of the stage's config section (canonical JSON): resuming under another config is refused.
    config_hash: z.string().regex(/^[0-9a-f]{64}$/),
    vocab_size: z.number().int().positive(),
    inputs_hash: z.string().min(1).optional(),
    // Loss on held-out data at this step, where the stage evaluates: retention keeps the best one.
    eval_loss: finite.optional(),
    // The ZeRO stage of a checkpoint written under DeepSpeed, whose layout differs by stage: a run
    // whose zero_stage is "auto" resumes under the stage its checkpoint was written under.
    zero_stage: z.number().int().min(0).max(3).optional(),
    trainer_version: z.string(),
    files: z
      .array(z.object({ path: z.string().min(1), size: z.number().int().nonnegative(), sha256: z.string().regex(/^[0-9a-f]{64}$/) }).strict())
      .nonempty(),
  })
  .strict();
export type CheckpointManifest = z.infer<typeof CheckpointManifest>;
export const MANIFEST_FILE = 'manifest.json';
// The file of a blocks folder that describes its shards; a folder without it is incomplete.
export const BLOCKS_INDEX_FILE = 'index.json';
// Folder under output_dir where a training stage's rank 0 writes TensorBoard event files (the
// Trainer's report_to); the orchestrator uploads it beside the stage's checkpoints, as
// s3://<bucket>/runs/<runId>/<stage>/tensorboard/.
export const TENSORBOARD_DIR = 'tensorboard';

/** The JSON Schema trainer-py validates requests and events against. */
export function contractJsonSchema(): Record<string, unknown> {
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    title: 'lawgpt-pipeline trainer contract',
    description: 'Generated from common/contract.ts by `npm run contract`; do not edit by hand.',
    contract_version: CONTRACT_VERSION,
    exit_invalid_input: EXIT_INVALID_INPUT,
    exit_interrupted: EXIT_INTERRUPTED,
    stage_io: STAGE_IO,
    tokenizer_inputs: TOKENIZER_INPUTS,
    request: z.toJSONSchema(TrainerRequest, { io: 'output', target: 'draft-2020-12' }),
    event: z.toJSONSchema(TrainerEvent, { target: 'draft-2020-12' }),
    manifest_file: MANIFEST_FILE,
    blocks_index_file: BLOCKS_INDEX_FILE,
    tensorboard_dir: TENSORBOARD_DIR,
    manifest: z.toJSONSchema(CheckpointManifest, { target: 'draft-2020-12' }),
  };
}
