// `start --dry-run`: what a run would do, without starting it. Stages in order, which ones the
// stage cache holds (looked up exactly as the workflow would, chaining through cached stages'
// outputs), the size of each stage's inputs with a token estimate, and the compute each stage
// should take, from the formula in the README ("Estimating a run").
import { GetObjectCommand, HeadBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import { get_encoding } from 'tiktoken';
import { z } from 'zod';
import { cacheKey, inputObjects, lookupStage } from '../activities/stage-cache.js';
import { getText, hasObjects, parseS3Uri, type ObjectInfo } from '../activities/s3.js';
import { sequencesPerStep, type RunConfig } from '../common/config.js';
import { givenModel, stageTask } from '../common/run.js';
import { dataInputNames, inputsOf, STAGE_IO, type StageName, type StageOutputs } from '../common/stages.js';

// Assumptions of the compute estimate (README, "Estimating a run").
export const ESTIMATE = {
  // V100 fp16 tensor-core peak, and the share of it training reaches (issue 12's target band).
  gpuPeakFlops: 125e12,
  gpuUtilisation: 0.3,
  // What one CPU process sustains on the cpu profile or a plain trainer (measured order of magnitude here).
  cpuFlops: 20e9,
  // The base tokenizer's vocabulary, which the merge adds vocab.vocab_size pieces to at most.
  baseVocab: 32_000,
  // Tokens read per byte when no sample can be read.
  tokensPerByte: 0.4,
  sampleBytes: 256 << 10,
};

export interface InputSize {
  name: string;
  uri: string;
  objects: number;
  bytes: number;
  /** cl100k_base tokens of a sample, scaled to the input's bytes. */
  tokens: number;
}

export interface StagePlan {
  stage: StageName;
  cachedFrom?: string;
  inputs: InputSize[];
  /** Inputs this run makes before the stage (their sizes are not known yet). */
  fromThisRun: string[];
  compute: { device: 'GPU' | 'CPU'; hours: number; tokens: number };
}

// The fields of a Hugging Face LLaMA config.json that decide its size, with LlamaConfig's defaults
// for those it leaves out, as transformers loads it.
const positive = z.number().int().positive();
const HfShape = z.object({
  hidden_size: positive.nullish().transform((v) => v ?? 4096),
  intermediate_size: positive.nullish().transform((v) => v ?? 11008),
  num_hidden_layers: positive.nullish().transform((v) => v ?? 32),
  num_attention_heads: positive.nullish().transform((v) => v ?? 32),
  num_key_value_heads: positive.nullish(),
  vocab_size: positive.nullish().transform((v) => v ?? 32000),
  tie_word_embeddings: z.boolean().nullish(),
});

/** The LLaMA a run trains, and where its shape was read. */
export interface ModelShape {
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  vocab: number;
  tied: boolean;
  from: string;
}

/** The shape the base stage makes (`base.*`, with the packaged tokenizer's vocabulary). */
export function baseShape(config: RunConfig): ModelShape {
  const { hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads } = config.base;
  return { hidden: hidden_size, intermediate: intermediate_size, layers: num_hidden_layers, heads: num_attention_heads, kvHeads: num_key_value_heads, vocab: ESTIMATE.baseVocab, tied: false, from: 'base.*' };
}

/**
 * The shape of the model the run trains: that of the model it is given (its config.json, as
 * Hugging Face writes it), else the base stage's. A given LLaMA-7B is 1,000 times the base stage's
 * default size, so its estimate must not come from `base.*`; one whose config.json cannot be read
 * falls back to `base.*` and says so.
 */
export async function modelShape(s3: S3Client, config: RunConfig): Promise<ModelShape> {
  const given = givenModel(config);
  if (!given) return baseShape(config);
  const uri = `${given}config.json`;
  let found: z.infer<typeof HfShape> | undefined;
  try {
    found = HfShape.parse(JSON.parse((await getText(s3, uri)) ?? 'null'));
  } catch {
    found = undefined;
  }
  if (!found) return { ...baseShape(config), from: `base.* (no LLaMA config.json readable at ${uri})` };
  const { hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads, vocab_size, tie_word_embeddings } = found;
  return {
    hidden: hidden_size,
    intermediate: intermediate_size,
    layers: num_hidden_layers,
    heads: num_attention_heads,
    kvHeads: num_key_value_heads ?? num_attention_heads,
    vocab: vocab_size,
    tied: tie_word_embeddings ?? false,
    from: uri,
  };
}

/** Parameters of a LLaMA of this shape (grouped-query attention), with the vocabulary the vocab stage may add. */
export function parameters(shape: ModelShape, config: RunConfig): number {
  const { hidden: h, intermediate: i, layers, heads, kvHeads: kv, tied } = shape;
  const vocab = shape.vocab + (config.stages.includes('vocab') ? config.vocab.vocab_size : 0);
  const attention = 2 * h * h + 2 * h * (h * kv) / heads;
  return layers * (attention + 3 * h * i) + (tied ? 1 : 2) * vocab * h;
}

/**
 * Where a stage's compute is estimated: GPUs for a DeepSpeed profile of v100, and for a stage the
 * config sends to its own task queue (runtime.task_queues, which GPU machines' trainer workers
 * poll); else the CPU, as a plain trainer without a GPU runs.
 */
export function deviceOf(stage: StageName, config: RunConfig): 'GPU' | 'CPU' {
  const section = config[stage];
  if ('deepspeed' in section && section.deepspeed) return section.deepspeed.profile === 'v100' ? 'GPU' : 'CPU';
  return config.runtime.task_queues?.[stage] ? 'GPU' : 'CPU';
}

/** Tokens a stage processes, and its FLOPs: 6·P·T for full training, 4·P·T with LoRA (no weight gradients for the frozen base), 2·P·T forward only. */
export function stageCompute(stage: StageName, config: RunConfig, shape: ModelShape, dataTokens: number): StagePlan['compute'] {
  const p = parameters(shape, config);
  let tokens = 0;
  let flops = 0;
  if (stage === 'pretrain' || stage === 'sft') {
    const section = config[stage];
    const sequence = stage === 'pretrain' ? config.pretrain.block_size : config.sft.cutoff_len;
    const perStep = sequencesPerStep(section) * sequence;
    tokens = section.epochs ? section.epochs * dataTokens : section.max_steps * perStep;
    const lora = stage === 'sft' || config.pretrain.method === 'lora';
    flops = (lora ? 4 : 6) * p * tokens;
  } else if (stage === 'eval') {
    // The final, pretrained and base models, each on the held-out blocks and every exam answer
    // candidate; the final one also answers the short-answer questions.
    const shortAnswers = config.data.short_answer ? config.eval.max_short_answers * (256 + config.eval.short_answer_max_new_tokens) : 0;
    tokens = 3 * (config.eval.max_heldout_blocks * config.eval.block_size + config.eval.max_exam_questions * 4 * 256) + shortAnswers;
    flops = 2 * p * tokens;
  }
  const gpu = deviceOf(stage, config) === 'GPU';
  const rate = gpu ? ESTIMATE.gpuPeakFlops * ESTIMATE.gpuUtilisation : ESTIMATE.cpuFlops;
  return { device: gpu ? 'GPU' : 'CPU', hours: flops / rate / 3600, tokens };
}

async function tokensPerByte(s3: S3Client, uri: string, objects: ObjectInfo[]): Promise<number> {
  const first = objects.find((o) => o.size > 0);
  if (!first) return ESTIMATE.tokensPerByte;
  const { bucket, key } = parseS3Uri(uri);
  const objectKey = uri.endsWith('/') ? key + first.key : key;
  const response = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: objectKey, Range: `bytes=0-${ESTIMATE.sampleBytes - 1}` }));
  const sample = Buffer.from(await response.Body!.transformToByteArray());
  const encoding = get_encoding('cl100k_base');
  try {
    return encoding.encode(sample.toString('utf8')).length / Math.max(sample.length, 1);
  } finally {
    encoding.free();
  }
}

export interface PlanDeps {
  s3: S3Client;
  trainerVersion: () => Promise<string>;
}

/** Where a run's own stages will write, as far as a plan can name it. */
const thisRunsOutputs = (config: RunConfig, stage: StageName) =>
  Object.fromEntries(STAGE_IO[stage].outputs.map((o) => [o, `s3://${config.bucket}/runs/<this run>/${stage}/${o}/`]));

/** Every input the run's stages read but do not make, by the config fields that name it (its `data`, the `artifacts` it is given), each URI once with the stages that read it. */
export function externalInputs(config: RunConfig): { fields: string; uri: string; stages: StageName[] }[] {
  const named = new Map<string, string[]>();
  const name = (field: string, uri: unknown) => {
    if (typeof uri === 'string' && uri.startsWith('s3://')) named.set(uri, [...(named.get(uri) ?? []), field]);
  };
  for (const [field, uri] of Object.entries(config.data)) name(`data.${field}`, uri);
  for (const [stage, outputs] of Object.entries(config.artifacts ?? {})) for (const [output, uri] of Object.entries(outputs ?? {})) name(`artifacts.${stage}.${output}`, uri);
  const done: StageOutputs = { ...(config.artifacts ?? {}) };
  const found = new Map<string, { fields: string; uri: string; stages: StageName[] }>();
  for (const stage of config.stages) {
    for (const uri of Object.values(inputsOf(stage, config.data, done))) {
      const fields = named.get(uri);
      if (!fields) continue; // made by an earlier stage of this run
      const entry = found.get(uri) ?? { fields: fields.join(', '), uri, stages: [] };
      entry.stages.push(stage);
      found.set(uri, entry);
    }
    done[stage] = thisRunsOutputs(config, stage);
  }
  return [...found.values()];
}

const isMissingBucket = (err: unknown) => ['NoSuchBucket', 'NotFound'].includes((err as Error)?.name);

/**
 * What a run would fail on for want of it: its bucket, and every input its stages read but do not
 * make that has no object at its URI. Checked before a run starts, so that a mistyped path costs
 * nothing instead of failing the run at the first stage that reads it. Other S3 errors are thrown.
 */
export async function missingInputs(s3: S3Client, config: RunConfig): Promise<string[]> {
  const missing: string[] = [];
  try {
    await s3.send(new HeadBucketCommand({ Bucket: config.bucket }));
  } catch (err) {
    if (!isMissingBucket(err)) throw err;
    missing.push(`bucket: no bucket '${config.bucket}' to write the run's artifacts to`);
  }
  for (const { fields, uri, stages } of externalInputs(config)) {
    const where = `${fields} (read by ${stages.join(', ')})`;
    try {
      if (!(await hasObjects(s3, uri))) missing.push(`${where}: nothing at ${uri}`);
    } catch (err) {
      if (!isMissingBucket(err)) throw err;
      missing.push(`${where}: no bucket '${parseS3Uri(uri).bucket}' for ${uri}`);
    }
  }
  return missing;
}

export interface RunPlan {
  model: ModelShape;
  stages: StagePlan[];
}

export async function planRun(config: RunConfig, deps: PlanDeps): Promise<RunPlan> {
  const model = await modelShape(deps.s3, config);
  const done: StageOutputs = { ...(config.artifacts ?? {}) };
  const made = new Set<string>();
  const version = config.runtime.cache ? await deps.trainerVersion() : '';
  const plans: StagePlan[] = [];
  for (const stage of config.stages) {
    const task = stageTask('dry-run', config, stage, done);
    const { inputs } = task;
    const fromThisRun = Object.entries(inputs).filter(([, uri]) => made.has(uri)).map(([name]) => name);
    const external = Object.fromEntries(Object.entries(inputs).filter(([name]) => !fromThisRun.includes(name)));
    const objects = await inputObjects(deps.s3, external);
    // The run's data is text, whose tokens are estimated; the other inputs are models and tokenizers.
    const text = dataInputNames(stage);
    const sizes: InputSize[] = [];
    for (const [name, list] of Object.entries(objects)) {
      const bytes = list.reduce((sum, o) => sum + o.size, 0);
      const isText = text.includes(name);
      sizes.push({ name, uri: external[name], objects: list.length, bytes, tokens: isText && bytes ? Math.round(bytes * (await tokensPerByte(deps.s3, external[name], list))) : 0 });
    }
    const hit = config.runtime.cache && !fromThisRun.length ? await lookupStage(deps.s3, task, cacheKey(task, objects, version), () => undefined) : undefined;
    const dataTokens = sizes.reduce((sum, s) => sum + s.tokens, 0);
    plans.push({ stage, ...(hit && { cachedFrom: hit.cachedFrom }), inputs: sizes, fromThisRun, compute: stageCompute(stage, config, model, dataTokens) });
    done[stage] = hit ? hit.outputs : thisRunsOutputs(config, stage);
    if (!hit) Object.values(done[stage]!).forEach((uri) => made.add(uri));
  }
  return { model, stages: plans };
}

const size = (bytes: number) => (bytes >= 1 << 30 ? `${(bytes / 2 ** 30).toFixed(1)} GiB` : bytes >= 1 << 20 ? `${(bytes / 2 ** 20).toFixed(1)} MiB` : `${(bytes / 1024).toFixed(1)} KiB`);
const count = (n: number) => (n >= 1e9 ? `${(n / 1e9).toFixed(2)}B` : n >= 1e6 ? `${(n / 1e6).toFixed(1)}M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)}k` : String(n));

export function formatPlan(config: RunConfig, { model, stages: plans }: RunPlan): string {
  const lines = [`plan for ${config.name} (${count(parameters(model, config))} parameters, the shape of ${model.from}; nothing started):`];
  for (const plan of plans) {
    const what = plan.cachedFrom ? `cache hit (outputs of run ${plan.cachedFrom})` : `runs: ~${plan.compute.hours < 0.01 ? '<0.01' : plan.compute.hours.toFixed(2)} ${plan.compute.device}-hours, ${count(plan.compute.tokens)} tokens`;
    lines.push(`  ${plan.stage.padEnd(9)}${what}`);
    for (const input of plan.inputs) lines.push(`             ${input.name}: ${input.objects} objects, ${size(input.bytes)}${input.tokens ? `, ~${count(input.tokens)} tokens` : ''}  ${input.uri}`);
    for (const name of plan.fromThisRun) lines.push(`             ${name}: made by this run`);
  }
  const hours = (device: 'GPU' | 'CPU') => plans.filter((p) => !p.cachedFrom && p.compute.device === device).reduce((sum, p) => sum + p.compute.hours, 0);
  lines.push(`  total: ~${hours('GPU').toFixed(2)} GPU-hours and ~${hours('CPU').toFixed(2)} CPU-hours for stages that would run (formula: README, "Estimating a run")`);
  return lines.join('\n');
}
