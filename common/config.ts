// The run config: one JSON file per recipe (configs/*.json), validated here before anything starts.
// Each stage's section travels unchanged to the trainer as `request.config`, so field names are
// snake_case on both sides. Defaults are the demo's tiny sizes unless a comment names a recipe.
import { z } from 'zod';
import { dataInputNames, StageName, STAGE_IO, STAGES, upstreamOf } from './stages.js';

const BUCKET = '[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]';
const S3Uri = z.string().regex(new RegExp(`^s3://${BUCKET}/.+$`), 'must look like s3://bucket/key');
// A prefix URI ends with '/' and names every object under it (a corpus folder, a model).
const S3PrefixUri = S3Uri.refine((s) => s.endsWith('/'), 'must end with "/" (a folder)');

const positiveInt = z.number().int().positive();
const probability = z.number().min(0).max(1);

export const BaseConfig = z
  .object({
    // A 32k LLaMA-family SentencePiece model shipped inside the PyPI package mistral_common (Apache-2.0).
    tokenizer: z.literal('mistral_common:tokenizer.model.v1').default('mistral_common:tokenizer.model.v1'),
    hidden_size: positiveInt.default(64),
    intermediate_size: positiveInt.default(176),
    num_hidden_layers: positiveInt.default(2),
    num_attention_heads: positiveInt.default(4),
    num_key_value_heads: positiveInt.default(4),
    max_position_embeddings: positiveInt.default(512),
    seed: z.number().int().nonnegative().default(0),
  })
  .strict();

export const VocabConfig = z
  .object({
    // Train a SentencePiece model on the corpus and merge its pieces (Chinese-LLaMA); with
    // data.vocab_words the words are merged too (LaWGPT), or alone when this is false.
    train_sentencepiece: z.boolean().default(true),
    model_type: z.enum(['bpe', 'unigram']).default('bpe'),
    // Chinese-LLaMA trained a 20k Chinese model; the demo corpus is far smaller.
    vocab_size: positiveInt.default(3000),
    character_coverage: probability.default(0.9995),
    split_digits: z.boolean().default(true),
    byte_fallback: z.boolean().default(true),
    max_sentence_length: positiveInt.default(4096),
    input_sentence_size: z.number().int().nonnegative().default(200000),
  })
  .strict();

const TrainingLoop = {
  max_steps: positiveInt,
  // Passes over the training data; when set, it decides the length instead of max_steps
  // (LaWGPT: 1 for continued pretraining, 20 for instruction tuning; BenTsao: 10).
  epochs: z.number().positive().optional(),
  micro_batch_size: positiveInt.default(4),
  gradient_accumulation_steps: positiveInt.default(1),
  // LaWGPT used 3e-4 for both phases (with LoRA).
  learning_rate: z.number().positive().max(1).default(3e-4),
  warmup_steps: z.number().int().nonnegative().default(0),
  logging_steps: positiveInt.default(1),
  // A checkpoint every this many optimizer steps; at most this many steps are lost to a crash.
  checkpoint_steps: positiveInt.default(10),
  seed: z.number().int().nonnegative().default(42),
  // Record `steps` optimizer steps from `start_step` on with the torch profiler, to see where a
  // step's time goes instead of guessing (trainer-py/lawgpt_trainer/profiling.py). Absent: none.
  profiler: z.object({ start_step: positiveInt, steps: positiveInt.max(10).default(1) }).strict().optional(),
  // Compile each decoder layer with torch.compile, fusing the elementwise work between its matrix
  // products (norms, rotary embeddings, the MLP's gate, LoRA's dropout and scaling): 1.35-1.44
  // times the tokens/s of a 1.1B model on an H200. The layers share their code, so they compile
  // once, at the first step (and again for the first evaluation, without gradients); never under
  // ZeRO-3, whose hooks gather each module's weights as it runs. "auto": on a GPU that Triton
  // supports (Ampere on; not a V100), unless the stage trains under ZeRO-3, which "auto" ZeRO may
  // choose; true: wherever asked, the CPU too, and refused where ZeRO-3 may train.
  compile: z.union([z.boolean(), z.literal('auto')]).default(false),
};

/** A profiler window past max_steps would record nothing; with `epochs` the length is unknown here. */
const profilerWithinRun = [
  (c: { max_steps: number; epochs?: number; profiler?: { start_step: number; steps: number } }) =>
    !c.profiler || c.epochs !== undefined || c.profiler.start_step + c.profiler.steps - 1 <= c.max_steps,
  { path: ['profiler', 'start_step'], message: 'the profiled steps must end by max_steps' },
] satisfies [unknown, { path: string[]; message: string }];

// LoRA adapters; each phase has its own defaults (LaWGPT's, see the README's config reference).
function loraConfig(defaults: { r: number; alpha: number; target_modules: [string, ...string[]]; modules_to_save: string[] }) {
  return z
    .object({
      r: positiveInt.default(defaults.r),
      alpha: positiveInt.default(defaults.alpha),
      dropout: probability.default(0.05),
      target_modules: z.array(z.string().min(1)).nonempty().default(defaults.target_modules),
      // Modules trained in full next to the adapters: Chinese-LLaMA trains embed_tokens and
      // lm_head this way, so that the rows of the new vocabulary learn.
      modules_to_save: z.array(z.string().min(1)).default(defaults.modules_to_save),
    })
    .strict()
    .prefault({});
}

// A host of the DeepSpeed hostfile: its name as the launcher reaches it (ssh), and its slots
// (processes: GPUs, or CPU processes for the cpu profile).
const DeepSpeedHost = z
  .object({
    host: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9.-]*$/, 'a host name or address'),
    slots: positiveInt,
  })
  .strict();

const DEEPSPEED_PROFILES = ['cpu', 'v100'] as const;

const isLoopback = (host: string) => host === 'localhost' || host === '::1' || /^127\./.test(host);

// Which decoder layers recompute their activations in the backward pass (see DeepSpeedConfig).
const GradientCheckpointing = z.union([z.boolean(), z.number().int().min(2), z.literal('auto')]);

// Training through the `deepspeed` launcher on every host listed; absent: one plain process.
// The trainer generates the DeepSpeed config from the profile (deepspeed_config.py):
//   v100: fp16 with dynamic loss scaling (V100 has no bf16), SDPA attention (no FlashAttention-2)
//   cpu:  fp32 on the gloo backend, so that the same code path runs in CI without a GPU
export const DeepSpeedConfig = z
  .object({
    profile: z.enum(DEEPSPEED_PROFILES),
    // Absent: chosen by the stage's method. LoRA takes ZeRO-2, since its frozen base fits every
    // GPU whole (13.5 GB at 7B in fp16) and ZeRO-3 would only gather it layer by layer at every
    // step (4.8x slower on an H100), while ZeRO-2 still partitions the optimizer state of the
    // embeddings and LM head that LoRA trains in full. Full training takes ZeRO-2 in one process,
    // where ZeRO-3 has no rank to partition over and its per-layer gathering only holds the GPU
    // back (busy 37% of a 1.1B step on an H100), and "auto" on several. "auto": ZeRO-2 where the
    // trainer's memory estimate fits it on the rank's GPU (with the least recomputation that does,
    // under "auto" gradient checkpointing), else ZeRO-3, which also partitions the weights; ZeRO-3
    // without a GPU. A 7B with its optimizer state needs ZeRO-3 on 8 x 32 GB; a model that fits
    // under ZeRO-2 trains without ZeRO-3's gathering and its 1.5x communication.
    zero_stage: z.union([z.number().int().min(0).max(3), z.literal('auto')]).optional(),
    // Recompute activations in the backward pass: part of what lets 7B fit on V100s. true: every
    // decoder layer; n: every n-th (layers 0, n, 2n, ...), keeping the others' activations, which
    // trades memory for the recompute (a quarter of a full-training step, a third of a LoRA one);
    // false: none; "auto": the least
    // recomputation that the trainer's memory estimate fits on the rank's GPU, with room to spare
    // (every layer without a GPU).
    gradient_checkpointing: GradientCheckpointing.default(false),
    hosts: z.array(DeepSpeedHost).nonempty().default([{ host: 'localhost', slots: 2 }]),
    master_addr: z.string().min(1).default('127.0.0.1'),
    master_port: z.number().int().min(1024).max(65535).default(29500),
  })
  .strict()
  .superRefine((d, ctx) => {
    // The other hosts' ranks would wait for rank 0 on themselves until the rendezvous times out.
    if (d.hosts.length > 1 && isLoopback(d.master_addr) && d.hosts.some((h) => !isLoopback(h.host))) {
      ctx.addIssue({ code: 'custom', path: ['master_addr'], message: `${d.master_addr} is this machine to every host; with hosts on other machines, give the first host's address that all of them reach` });
    }
  });
export type DeepSpeedConfig = z.infer<typeof DeepSpeedConfig>;

/** Training processes of a stage: every slot of every host under DeepSpeed, else one. */
const worldSize = (deepspeed: DeepSpeedConfig | undefined) => (deepspeed ? deepspeed.hosts.reduce((sum, h) => sum + h.slots, 0) : 1);

/** Training processes of a stage's config section (its DeepSpeed world size). */
export const processesOf = (section: object) => worldSize('deepspeed' in section ? (section.deepspeed as DeepSpeedConfig | undefined) : undefined);

/** Sequences per optimizer step over all processes, as the trainer derives them. */
export function sequencesPerStep(section: { micro_batch_size: number; gradient_accumulation_steps: number; global_batch_size?: number }): number {
  return section.global_batch_size ?? section.micro_batch_size * section.gradient_accumulation_steps * processesOf(section);
}

const zeroStageFor = (method: 'lora' | 'full', deepspeed: DeepSpeedConfig) => (method === 'full' && worldSize(deepspeed) > 1 ? 'auto' : 2);

// A stage's config as DeepSpeed's choices see it; one without a method (sft) trains LoRA.
type UnderDeepSpeed = { compile: boolean | 'auto'; deepspeed?: DeepSpeedConfig; method?: 'lora' | 'full' };

/** The config with deepspeed.zero_stage, when absent, chosen by the stage's method. */
const withZeroStage = <C extends UnderDeepSpeed>(c: C): C =>
  c.deepspeed && c.deepspeed.zero_stage === undefined ? { ...c, deepspeed: { ...c.deepspeed, zero_stage: zeroStageFor(c.method ?? 'lora', c.deepspeed) } } : c;

const compiledOutsideZero3 = [
  (c: UnderDeepSpeed) => !(c.compile === true && c.deepspeed && [3, 'auto'].includes(c.deepspeed.zero_stage ?? zeroStageFor(c.method ?? 'lora', c.deepspeed))),
  {
    path: ['compile'],
    message:
      'cannot be true under ZeRO-3, whose hooks gather weights inside the compiled layers, nor under "auto", which may choose it (deepspeed.zero_stage 3 or "auto", the default for full training on several processes): set deepspeed.zero_stage to 2, or compile to "auto"',
  },
] satisfies [unknown, { path: string[]; message: string }];

// Sequences per optimizer step over all processes; when set, gradient_accumulation_steps is
// derived from it (global = micro_batch_size x processes x accumulation), so that a stage keeps its
// batch on any number of GPUs.
const globalBatchSize = positiveInt.optional();

const globalBatchOverProcesses = [
  (c: { global_batch_size?: number; micro_batch_size: number; deepspeed?: DeepSpeedConfig }) =>
    !c.global_batch_size || c.global_batch_size % (c.micro_batch_size * worldSize(c.deepspeed)) === 0,
  { path: ['global_batch_size'], message: 'must be a multiple of micro_batch_size x processes (the sum of deepspeed.hosts slots, or 1)' },
] satisfies [unknown, { path: string[]; message: string }];

export const PretrainConfig = z
  .object({
    ...TrainingLoop,
    max_steps: positiveInt.default(30),
    block_size: positiveInt.default(128),
    // Held-out blocks scored at every checkpoint (0: none); the best checkpoint is always kept.
    eval_blocks: z.number().int().nonnegative().default(16),
    // LaWGPT pretrained with 128.
    global_batch_size: globalBatchSize,
    // LaWGPT continued pretraining with LoRA; `full` trains every weight.
    method: z.enum(['lora', 'full']).default('lora'),
    lora: loraConfig({ r: 16, alpha: 32, target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], modules_to_save: ['embed_tokens', 'lm_head'] }),
    deepspeed: DeepSpeedConfig.optional(),
  })
  .strict()
  .refine(...globalBatchOverProcesses)
  .refine(...profilerWithinRun)
  .refine(...compiledOutsideZero3)
  .overwrite(withZeroStage);

export const SftConfig = z
  .object({
    ...TrainingLoop,
    max_steps: positiveInt.default(30),
    cutoff_len: positiveInt.default(256),
    global_batch_size: globalBatchSize,
    // As deepspeed.gradient_checkpointing, for instruction tuning in one process: "auto" takes the
    // least recomputation that sft's memory estimate fits on the GPU (README, "Per-GPU memory").
    // Under sft.deepspeed, its own gradient_checkpointing says it.
    gradient_checkpointing: GradientCheckpointing.default(false),
    // Several samples share one sequence of up to cutoff_len tokens instead of each being padded
    // (each keeps its own prompt masked out of the loss): fewer wasted tokens on short answers.
    packing: z.boolean().default(false),
    lora: loraConfig({ r: 8, alpha: 16, target_modules: ['q_proj', 'v_proj'], modules_to_save: [] }),
    // A consultation may carry several lawyers' answers: one sample each, or one with the first or the longest.
    dialogue_answers: z.enum(['first', 'longest', 'all']).default('first'),
    max_dialogue_records: positiveInt.default(300),
    max_exam_records: positiveInt.default(300),
    max_instruction_records: positiveInt.default(300),
    // Knowledge-graph records read (data.knowledge); each gives a question per relation, and one on
    // the whole entity where there are several.
    max_knowledge_records: positiveInt.default(300),
    // Absent: one process, on one GPU. Present: data parallel over every slot of its hosts, as
    // pretrain (ZeRO-2 by default: LoRA's frozen base fits each GPU whole); LaWGPT tuned on 8 GPUs.
    deepspeed: DeepSpeedConfig.optional(),
  })
  .strict()
  .refine(...globalBatchOverProcesses)
  .refine(...profilerWithinRun)
  .refine((c) => !c.deepspeed || c.gradient_checkpointing === false, {
    path: ['gradient_checkpointing'],
    message: 'is for one process: under sft.deepspeed, set deepspeed.gradient_checkpointing instead',
  })
  .refine(...compiledOutsideZero3)
  .overwrite(withZeroStage);

export const EvalConfig = z
  .object({
    block_size: positiveInt.default(128),
    max_heldout_blocks: positiveInt.default(32),
    max_exam_questions: positiveInt.default(40),
    max_new_tokens: positiveInt.default(8),
    // Short-answer questions answered in full (data.short_answer), and how long an answer may be.
    max_short_answers: positiveInt.default(20),
    short_answer_max_new_tokens: positiveInt.default(256),
    // Blocks, answer candidates or questions per forward pass; halved on a GPU while it does not fit.
    batch_size: positiveInt.default(8),
  })
  .strict();

// How documents and exam questions are split into training and held-out parts; every stage
// applies the same rule so that nothing held out is ever trained on.
export const SplitConfig = z
  .object({
    heldout_percent: z.number().int().min(1).max(50).default(10),
    // The exam's own share, where it differs (absent: heldout_percent): an exam needs far more held
    // out than a corpus for a figure that means something (README, config reference). 100: the
    // exam is for evaluation alone, as a benchmark is, and sft trains on none of it.
    exam_heldout_percent: z.number().int().min(1).max(100).optional(),
  })
  .strict();

// What a stage does with a record it cannot use: a corpus file that is not UTF-8, a JSONL line
// that is no JSON object or lacks a field, an exam answer that is no option, a line longer than
// max_line_chars. `fail` stops the stage with an error naming the object and line, before any
// training; `skip` leaves each out and counts it (the stage's `skipped_records` metric).
export const OnBadRecord = z.enum(['fail', 'skip']).default('fail');
// No paragraph of a judgment comes near this; a longer "line" is a broken export (one 50 MB line).
export const MaxLineChars = positiveInt.default(100_000);

// How the corpus is cleaned before any stage reads it (trainer-py/lawgpt_trainer/cleaning.py).
export const CleaningConfig = z
  .object({
    // Full-width letters and digits to half-width, the ideographic space to a space; CJK punctuation stays.
    normalize_width: z.boolean().default(true),
    // Documents shorter than this (in characters, after normalising) are dropped.
    min_chars: z.number().int().nonnegative().default(20),
    // Documents whose normalised text repeats an earlier one are dropped.
    deduplicate: z.boolean().default(true),
  })
  .strict();

/** runtime.retry_backoff_seconds' default, also for runs whose config predates it. */
export const RETRY_BACKOFF_SECONDS = 30;

/** runtime.progress_reports_per_execution's default, also for runs whose config predates it. */
export const PROGRESS_REPORTS_PER_EXECUTION = 8_000;

export const RuntimeConfig = z
  .object({
    stage_timeout_minutes: positiveInt.default(24 * 60),
    // A stage heartbeats every 5 s while its trainer lives; a missing worker is noticed after this.
    heartbeat_timeout_seconds: positiveInt.min(15).default(120),
    // Attempts of a stage; a budget whose attempts committed a newer checkpoint is renewed once
    // spent, so a stage fails once a whole budget gets no further.
    max_attempts: positiveInt.max(20).default(3),
    // A failed attempt is tried again after this long, each next wait twice the last, up to 10
    // minutes: an outage of S3 or the network for a minute or two as a stage starts or publishes
    // fails its downloads or uploads, and Temporal's default (1 s, then 2 s) spent three attempts
    // in seconds. An attempt that committed a checkpoint and then failed is no crash loop: its retry
    // starts at once (one that timed out, a lost machine, waits like any other).
    retry_backoff_seconds: positiveInt.max(600).default(RETRY_BACKOFF_SECONDS),
    // How often a running stage reports step and loss to the workflow; each report adds about four
    // history events, so 60 s lets one stage run for over a week within Temporal's history limit.
    progress_report_seconds: positiveInt.default(60),
    // Temporal refuses an execution's signals past 10,000 (history.maximumSignalsPerExecution) and
    // ends one whose history passes 51,200 events: a stage that has sent this many progress reports
    // (5.5 days at 60 s) is stopped as a pause stops it, committing a checkpoint, and goes on from
    // it in a fresh execution of the run (continue-as-new). Lower it on a server whose limit is lower.
    progress_reports_per_execution: positiveInt.min(10).max(9_000).default(PROGRESS_REPORTS_PER_EXECUTION),
    // Skip a stage whose inputs, config and trainer match an earlier completed one (start-run --no-cache).
    cache: z.boolean().default(true),
    // Committed checkpoints kept per stage, plus the one with the lowest held-out loss; older ones
    // are deleted once a newer one is committed.
    keep_checkpoints: positiveInt.default(2),
    // After SIGTERM, how long a trainer may take to save its final checkpoint before SIGKILL: a 7B
    // trained in full writes and hashes about 100 GB of optimizer state, minutes on a fast disk.
    stop_grace_seconds: positiveInt.default(600),
    // A pretrain, sft or eval trainer that has reported progress and then reports nothing for this
    // long is taken for hung (its worker heartbeats on): it is stopped as by a cancel, and the
    // attempt fails retryably. Training reports every logging_steps steps and every checkpoint:
    // keep this above the time those steps take, plus a checkpoint save and a held-out evaluation.
    // At most setTimeout's 24.8 days, past which Node fires it at once.
    stall_timeout_seconds: positiveInt.max(2_147_483).default(1800),
    // A stage that waits for a person's approval (the `approve` update: start-run approve, the UI)
    // before it starts, e.g. pretrain, before days of GPU time; the run fails if none comes in time.
    approve_before: StageName.optional(),
    approval_timeout_hours: z.number().positive().max(24 * 30).default(72),
    // The Temporal task queue a stage runs on, e.g. { "pretrain": "lawgpt-gpu" }: only the trainer
    // workers polling it (GPU machines) take it. Stages not named run on the run's own queue, where
    // the orchestrator worker runs the workflow, cache lookups and the report.
    task_queues: z.partialRecord(StageName, z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/, 'a plain queue name')).optional(),
  })
  .strict();

export const STAGE_CONFIGS = {
  base: BaseConfig,
  vocab: VocabConfig,
  pretrain: PretrainConfig,
  sft: SftConfig,
  eval: EvalConfig,
} as const satisfies Record<StageName, z.ZodType>;

// Outputs of stages this run does not run, by stage and output name: a published model or an
// earlier run's artifact, e.g. { "pretrain": { "model": "s3://models/chinese-llama-7b/" } } to
// start at sft.
const Artifacts = z
  .partialRecord(StageName, z.record(z.string(), S3PrefixUri))
  .superRefine((given, ctx) => {
    for (const [stage, outputs] of Object.entries(given)) {
      const known: readonly string[] = STAGE_IO[stage as StageName].outputs;
      for (const name of Object.keys(outputs ?? {}).filter((o) => !known.includes(o))) {
        ctx.addIssue({ code: 'custom', path: [stage, name], message: `${stage} has no output ${name} (it has ${known.join(', ')})` });
      }
    }
  });

// A metric bound checked after a stage: a run whose stage misses it fails before the next stage.
const Gate = z
  .object({ min: z.number().optional(), max: z.number().optional() })
  .strict()
  .refine((g) => g.min !== undefined || g.max !== undefined, 'set min, max or both');
export type Gate = z.infer<typeof Gate>;

/** Which required inputs of the run's stages neither an earlier stage of the run nor `artifacts` provides. */
function missingUpstream(stages: readonly StageName[], artifacts: z.infer<typeof Artifacts>): string[] {
  const missing: string[] = [];
  stages.forEach((stage, i) => {
    for (const [input, [from, output]] of upstreamOf(stage)) {
      const required = (STAGE_IO[stage].inputs as readonly string[]).includes(input);
      if (required && !stages.slice(0, i).includes(from) && !artifacts[from]?.[output]) {
        missing.push(`${stage} needs ${from}'s ${output}: run ${from} first, or give artifacts.${from}.${output}`);
      }
    }
  });
  return missing;
}

export const RunConfig = z
  .object({
    name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,39}$/, 'lowercase letters, digits and "-", at most 40'),
    bucket: z.string().regex(new RegExp(`^${BUCKET}$`), 'must be a valid S3 bucket name'),
    stages: z
      .array(StageName)
      .nonempty()
      .default([...STAGES])
      .refine((s) => s.every((name, i) => i === 0 || STAGES.indexOf(name) > STAGES.indexOf(s[i - 1])), {
        message: `must be stages of the pipeline in its order (${STAGES.join(', ')}), each once`,
      }),
    artifacts: Artifacts.default({}),
    // Bounds on a stage's metrics, e.g. { "eval": { "exam_accuracy": { "min": 0.3 } } }.
    gates: z.partialRecord(StageName, z.record(z.string(), Gate)).default({}),
    data: z
      .object({
        // Needed by vocab, pretrain and eval; an instruction-tuning-only run can do without.
        corpus: S3PrefixUri.optional(),
        // These five: JSONL, or a JSON array file (trainer-py's data.py reads them).
        // Lawyer consultations {question, answers[]}, or multi-turn {turns[]}
        dialogue: S3Uri.optional(),
        // Multiple-choice exam questions {question, options, answer, multi?, subject?, analysis?}
        exam: S3Uri.optional(),
        // Alpaca-shape instructions {instruction, input, output} (worked exam reasoning, BenTsao QA)
        instructions: S3Uri.optional(),
        // Knowledge-graph records in cMeKG's shape {中心词, <relation>: [values] or value, ...} (BenTsao's
        // knowledge), turned into questions answered with the graph's own values
        knowledge: S3Uri.optional(),
        // Short-answer questions (case analyses) with reference answers {id?, input, output}, for eval alone
        short_answer: S3Uri.optional(),
        // A domain word list, one word per line, merged into the vocabulary as LaWGPT did (optional)
        vocab_words: S3Uri.optional(),
        split: SplitConfig.prefault({}),
        cleaning: CleaningConfig.prefault({}),
        on_bad_record: OnBadRecord,
        max_line_chars: MaxLineChars,
      })
      .strict(),
    base: BaseConfig.prefault({}),
    vocab: VocabConfig.prefault({}),
    pretrain: PretrainConfig.prefault({}),
    sft: SftConfig.prefault({}),
    eval: EvalConfig.prefault({}),
    runtime: RuntimeConfig.prefault({}),
  })
  .strict()
  .refine((c) => !c.stages.includes('sft') || dataInputNames('sft').some((name) => c.data[name as keyof typeof c.data]), {
    path: ['data'],
    message: `sft needs instruction data: set at least one of ${dataInputNames('sft').join(', ')}`,
  })
  .refine((c) => c.vocab.train_sentencepiece || c.data.vocab_words, {
    path: ['vocab', 'train_sentencepiece'],
    message: 'with train_sentencepiece false, data.vocab_words must give the words to merge',
  })
  .superRefine((c, ctx) => {
    const needCorpus = c.stages.filter((s) => (STAGE_IO[s].inputs as readonly string[]).includes('corpus'));
    if (needCorpus.length && !c.data.corpus) ctx.addIssue({ code: 'custom', path: ['data', 'corpus'], message: `required by ${needCorpus.join(', ')}` });
    for (const message of missingUpstream(c.stages, c.artifacts)) ctx.addIssue({ code: 'custom', path: ['stages'], message });
    for (const stage of c.stages.filter((s) => c.artifacts[s])) {
      ctx.addIssue({ code: 'custom', path: ['artifacts', stage], message: `${stage} runs in this run, so its outputs cannot be given` });
    }
  });

export type RunConfig = z.infer<typeof RunConfig>;

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid run config (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
  }
}

/** One line per problem, `path: message`, for every zod validation this project reports. */
export function describeIssues(error: z.ZodError): string[] {
  return error.issues.map((issue) => {
    const path = issue.path.length ? issue.path.join('.') : '(root)';
    if (issue.code === 'unrecognized_keys') return `${path}: unknown field(s) ${issue.keys.join(', ')}`;
    return `${path}: ${issue.message}`;
  });
}

/** Validates a parsed config, naming every wrong field at once. */
export function parseRunConfig(raw: unknown): RunConfig {
  const result = RunConfig.safeParse(raw);
  if (!result.success) throw new ConfigError(describeIssues(result.error));
  return result.data;
}
