// The contract between the orchestrator and the trainer, written down once.
//
//   python -m lawgpt_trainer <stage> --request <request.json>
//
// The trainer reads a TrainerRequest, writes one TrainerEvent per line (JSON) on stdout and
// nothing else there; logs go to stderr. Exit code 0 after a `completed` event is success;
// EXIT_INVALID_INPUT means retrying cannot help (bad config or data); any other code is a
// failure a retry may fix. `npm run contract` regenerates trainer-py's JSON Schema from this file,
// and both test suites check against it.
import { z } from 'zod';
import { SplitConfig, STAGE_CONFIGS } from './config.js';
import { StageName, STAGE_IO, STAGES } from './stages.js';

export const CONTRACT_VERSION = 1;
export const EXIT_INVALID_INPUT = 2;

const RequestCommon = {
  contract_version: z.literal(CONTRACT_VERSION),
  run_id: z.string().min(1),
  output_dir: z.string().min(1),
  split: SplitConfig,
};

function requestFor<S extends StageName>(stage: S) {
  const inputs = Object.fromEntries(STAGE_IO[stage].inputs.map((name) => [name, z.string().min(1)]));
  return z
    .object({ ...RequestCommon, stage: z.literal(stage), inputs: z.object(inputs).strict(), config: STAGE_CONFIGS[stage] })
    .strict();
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
  z.object({ event: z.literal('log'), level: z.enum(['info', 'warning']), message: z.string() }).strict(),
  z
    .object({
      event: z.literal('completed'),
      // Output name -> path relative to output_dir; names are STAGE_IO[stage].outputs.
      outputs: z.record(z.string(), z.string()),
      metrics: z.record(z.string(), finite),
    })
    .strict(),
  z.object({ event: z.literal('failed'), kind: z.enum(['invalid_input', 'internal']), message: z.string() }).strict(),
]);
export type TrainerEvent = z.infer<typeof TrainerEvent>;

/** The JSON Schema trainer-py validates requests and events against. */
export function contractJsonSchema(): Record<string, unknown> {
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    title: 'lawgpt-pipeline trainer contract',
    description: 'Generated from common/contract.ts by `npm run contract`; do not edit by hand.',
    contract_version: CONTRACT_VERSION,
    exit_invalid_input: EXIT_INVALID_INPUT,
    stage_io: STAGE_IO,
    request: z.toJSONSchema(TrainerRequest, { io: 'output', target: 'draft-2020-12' }),
    event: z.toJSONSchema(TrainerEvent, { target: 'draft-2020-12' }),
  };
}
