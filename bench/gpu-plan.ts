// The run plan of `npm run bench:gpu` (bench/gpu.py executes it on the GPU machine): each row's
// stage config comes from the shipped recipes through parseRunConfig, the one home of defaults and
// rules (the ZeRO stage by method among them), shortened to a few steps. Then gpu.py --prepare
// makes the tokenizers and data slices the rows need, into the carry folder.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { deepspeedStart } from '../activities/deepspeed-launch.js';
import { parseRunConfig, type RunConfig } from '../common/config.js';
import { trainerArgs } from '../common/contract.js';
import { ROOT } from './context.js';

const recipe = (name: string) => JSON.parse(readFileSync(join(ROOT, 'configs', name), 'utf8'));

// The shapes measured on the H100 in ../shared/FACTS.md, so that before and after compare.
const SHAPES = {
  '1.1B': { hidden_size: 2048, intermediate_size: 5632, num_hidden_layers: 22, num_attention_heads: 32, num_key_value_heads: 4 },
  '7B-width-4-layers': { hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 4, num_attention_heads: 32, num_key_value_heads: 32 },
  // LLaMA-7B's dimensions with 8 of its 32 layers: loading and saving all 32 would not fit the
  // 8 minutes; samples/s scale to 32 layers by the non-embedding parameters (gpu.py reports both).
  '7B-8-of-32-layers': { hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 8, num_attention_heads: 32, num_key_value_heads: 32 },
} as const;
const SMOKE_SHAPE = { tiny: { hidden_size: 64, intermediate_size: 176, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 4 } };

interface Row {
  name: string;
  stage: 'pretrain' | 'sft';
  shape: string;
  config: RunConfig['pretrain'] | RunConfig['sft'];
  /** The activity's start of the ranks (deepspeedStart), `{request}` to fill in. */
  launcher?: string[];
  launcher_env?: NodeJS.ProcessEnv;
  launcher_files?: Record<string, string>;
  /** Also report samples/s as if the model had this many layers (LLaMA-7B's 32). */
  scale_to_layers?: number;
  /** A row that resumes another row's checkpoint at this step, and compares the losses after it. */
  resumes?: { row: string; step: number };
}

export function plan(smoke: boolean) {
  const lawgpt = recipe('lawgpt.json');
  const bentsao = recipe('bentsao.json');
  // The measured setup: block 1024, micro-batch 8, global batch 32 on one GPU, the v100
  // profile (fp16, SDPA). Gradient checkpointing is the recipe's "auto": on a card with room to
  // spare the trainer recomputes fewer layers or none (the table says how many). Step 2, past the
  // first step's warm-up, runs under the torch profiler; gpu.py leaves it out of the step times.
  // One checkpoint, at the end (the trainer says what it cost), but in the row another resumes,
  // which also saves midway: a 1.1B full-training save took 25 s on the H100, and the plan's time
  // is what limits how much of it one GPU session measures. The ZeRO stage is the one-process
  // choice (common/config.ts), but for the widest shape's full row, which takes ZeRO-3 as full
  // training of a 7B on several V100s does.
  const steps = smoke ? 4 : 5;
  const resumedAt = smoke ? 2 : 3;
  const pretrain = (method: 'lora' | 'full', zero_stage?: number, checkpoint_steps = steps) =>
    parseRunConfig({
      ...lawgpt,
      pretrain: {
        ...lawgpt.pretrain,
        method,
        epochs: undefined,
        max_steps: steps,
        checkpoint_steps,
        warmup_steps: 0,
        logging_steps: 1,
        eval_blocks: 0,
        micro_batch_size: smoke ? 2 : 8,
        global_batch_size: smoke ? 4 : 32,
        block_size: smoke ? 64 : 1024,
        profiler: { start_step: 2, steps: 1 },
        deepspeed: { ...lawgpt.pretrain.deepspeed, profile: smoke ? 'cpu' : 'v100', hosts: [{ host: 'localhost', slots: 1 }], ...(zero_stage && { zero_stage }) },
      },
    }).pretrain;
  const shortSft = { epochs: undefined, max_steps: smoke ? 2 : 3, checkpoint_steps: 1000, logging_steps: 1, warmup_steps: 0 };
  const sft = parseRunConfig({
    ...bentsao,
    sft: { ...bentsao.sft, ...shortSft, ...(smoke && { micro_batch_size: 2, gradient_accumulation_steps: 2 }) },
  }).sft;
  // LaWGPT's instruction tuning as the recipe runs it, under DeepSpeed, on one of its eight slots:
  // a rank's memory is the same at any number of them (the ZeRO-2 partitions are of LoRA's few
  // weights), so this row checks the per-rank estimate the recipe's V100 plan rests on.
  const lawgptSft = parseRunConfig({
    ...lawgpt,
    sft: {
      ...lawgpt.sft,
      ...shortSft,
      ...(smoke && { micro_batch_size: 2, global_batch_size: 4 }),
      deepspeed: { ...lawgpt.sft.deepspeed, profile: smoke ? 'cpu' : 'v100', hosts: [{ host: 'localhost', slots: 1 }] },
    },
  }).sft;
  const tiny = Object.keys(SMOKE_SHAPE)[0];
  const [small, wide] = smoke ? [tiny, tiny] : ['1.1B', '7B-width-4-layers'];
  const launched = (stage: Row['stage'], config: Row['config']) => {
    const start = deepspeedStart(config.deepspeed!, trainerArgs(stage, '{request}', true), {});
    return { stage, config, launcher: start.args, launcher_env: start.env, launcher_files: start.files };
  };
  const measured = (shape: string, method: 'lora' | 'full', zero_stage?: number, checkpoint_steps?: number): Row => ({
    name: `${shape} ${method}`,
    shape,
    ...launched('pretrain', pretrain(method, zero_stage, checkpoint_steps)),
  });
  // The recipe's `compile` is "auto": the GPU rows compile their layers but under ZeRO-3; on the CPU,
  // where "auto" stays eager, the smoke plan compiles anyway, to check that path.
  const recipeLora = measured(small, 'lora', undefined, resumedAt);
  const lora = smoke ? { ...recipeLora, config: { ...recipeLora.config, compile: true } } : recipeLora;
  const sftShape = smoke ? small : '7B-8-of-32-layers';
  // In the order of what the goals still lack, so that a call cut short leaves out what
  // matters least: the small shape's LoRA (compiled, the recipe's way), its full training under
  // the one-process ZeRO stage, the resume (a fresh worker given what the first row compiled,
  // through the compile cache), the same LoRA eager (what compiling gains); the widest shape's
  // full training under ZeRO-3; BenTsao's row; LaWGPT's under DeepSpeed (never yet on a GPU); last
  // the widest shape's LoRA, measured before.
  // The smoke plan's one shape is both, so it trains in full once, under ZeRO-3.
  const rows: Row[] = [
    lora,
    ...(smoke ? [] : [measured(small, 'full')]),
    { ...lora, name: `${lora.name} resumed`, resumes: { row: lora.name, step: resumedAt } },
    { ...lora, name: `${lora.name} eager`, config: { ...lora.config, compile: false, checkpoint_steps: steps } },
    measured(wide, 'full', 3),
    { name: `${sftShape} sft (BenTsao)`, stage: 'sft', shape: sftShape, config: sft, scale_to_layers: 32 },
    { name: `${sftShape} sft (LaWGPT, DeepSpeed)`, shape: sftShape, ...launched('sft', lawgptSft), scale_to_layers: 32 },
    ...(smoke ? [] : [measured(wide, 'lora')]),
  ];
  const run = parseRunConfig(lawgpt);
  return {
    smoke,
    shapes: smoke ? SMOKE_SHAPE : SHAPES,
    rows,
    // What gpu.py --prepare needs to make the tokenizers with the trainer's own stages.
    run: { data: { split: run.data.split, cleaning: run.data.cleaning, on_bad_record: run.data.on_bad_record, max_line_chars: run.data.max_line_chars }, base: parseRunConfig({ ...lawgpt, base: {} }).base, vocab: { ...run.vocab, ...(smoke && { vocab_size: 3000 }) } },
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { carry: { type: 'string' }, smoke: { type: 'boolean', default: false } } });
  const carry = values.carry!;
  mkdirSync(carry, { recursive: true });
  writeFileSync(join(carry, 'plan.json'), JSON.stringify(plan(values.smoke!), null, 2) + '\n');
  execFileSync(process.env.LAWGPT_PYTHON ?? 'python3', [join(ROOT, 'bench', 'gpu.py'), '--prepare', '--carry', carry], { stdio: 'inherit', cwd: ROOT });
}
