// The GPU benchmark's plan (bench/gpu-plan.ts), which bench/gpu.py turns into trainer requests on
// a machine where nothing can be fixed: every row must make a request the contract accepts.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CONTRACT_VERSION, TrainerRequest } from '../common/contract.js';
import { describeIssues, parseRunConfig, type RunConfig } from '../common/config.js';
import { plan } from '../bench/gpu-plan.js';

// What gpu.py gives each stage as inputs (paths are its own).
const INPUTS = {
  pretrain: { corpus: '/carry/corpus', tokenizer: '/carry/tokenizer', base_model: '/work/model' },
  sft: { model: '/work/model', instructions: '/carry/instructions.jsonl' },
};

describe('the GPU benchmark plan', () => {
  for (const smoke of [false, true]) {
    it(`makes a valid trainer request of every row${smoke ? ' (smoke)' : ''}`, () => {
      const { rows, run } = plan(smoke);
      expect(rows.length).toBeGreaterThanOrEqual(4);
      for (const row of rows) {
        // As gpu.py builds it: the run's data rules, the row's stage config.
        const request = { contract_version: CONTRACT_VERSION, run_id: 'bench-gpu', stage: row.stage, output_dir: '/work/out', ...run.data, inputs: INPUTS[row.stage], config: row.config };
        const checked = TrainerRequest.safeParse(request);
        expect(checked.success ? [] : describeIssues(checked.error), row.name).toEqual([]);
        // The trainer fills in no defaults: a field zod would default must be in the plan.
        expect(Object.keys(checked.data!).filter((field) => !(field in request)), row.name).toEqual([]);
      }
    });
  }

  it('measures full training under the one-process ZeRO stage and under the one a 7B takes on several V100s', () => {
    const stages = (smoke: boolean) =>
      Object.fromEntries(plan(smoke).rows.filter((r) => r.stage === 'pretrain').map((r) => [r.name, (r.config as RunConfig['pretrain']).deepspeed?.zero_stage]));
    expect(stages(false)).toEqual({ '1.1B lora': 2, '1.1B full': 2, '7B-width-4-layers lora': 2, '7B-width-4-layers full': 3, '1.1B lora eager': 2, '1.1B lora resumed': 2 });
    expect(stages(true)).toEqual({ 'tiny lora': 2, 'tiny full': 3, 'tiny lora eager': 2, 'tiny lora resumed': 2 });
  });

  it("compiles as the recipe does, and measures the recipe's LoRA eager beside it", () => {
    const compile = (smoke: boolean) => Object.fromEntries(plan(smoke).rows.map((r) => [r.name, r.config.compile]));
    expect(compile(false)).toEqual({
      '1.1B lora': 'auto',
      '1.1B full': 'auto',
      '1.1B lora resumed': 'auto',
      '1.1B lora eager': false,
      '7B-width-4-layers full': 'auto',
      '7B-8-of-32-layers sft (BenTsao)': false,
      '7B-8-of-32-layers sft (LaWGPT, DeepSpeed)': false,
      '7B-width-4-layers lora': 'auto',
    });
    // On the CPU "auto" would not compile: the smoke plan forces it, to check the compiled path.
    expect(compile(true)).toMatchObject({ 'tiny lora': true, 'tiny lora resumed': true, 'tiny lora eager': false });
  });

  it('saves a checkpoint midway only in the row that another resumes, from that checkpoint', () => {
    for (const smoke of [false, true]) {
      const pretrain = plan(smoke).rows.filter((r) => r.stage === 'pretrain');
      const resumed = pretrain.filter((r) => r.resumes).map((r) => r.resumes!);
      expect(resumed).toHaveLength(1);
      for (const row of pretrain.filter((r) => !r.resumes)) {
        const { checkpoint_steps, max_steps } = row.config as RunConfig['pretrain'];
        expect(checkpoint_steps, row.name).toBe(row.name === resumed[0].row ? resumed[0].step : max_steps);
      }
      // Steps follow the checkpoint it resumes, to compare the losses on.
      expect(resumed[0].step).toBeLessThan((pretrain[0].config as RunConfig['pretrain']).max_steps!);
      // gpu.py runs the rows in order: the run resumed has to have run.
      const names = pretrain.map((r) => r.name);
      expect(names.indexOf(resumed[0].row)).toBeLessThan(names.findIndex((name) => name.endsWith('resumed')));
    }
  });

  it('runs first what the goals still lack, so that a call cut short leaves out the 7B-width LoRA row, measured before', () => {
    expect(plan(false).rows.map((r) => r.name)).toEqual([
      '1.1B lora',
      '1.1B full',
      '1.1B lora resumed',
      '1.1B lora eager',
      '7B-width-4-layers full',
      '7B-8-of-32-layers sft (BenTsao)',
      '7B-8-of-32-layers sft (LaWGPT, DeepSpeed)',
      '7B-width-4-layers lora',
    ]);
  });

  it("tunes LaWGPT's instructions as its recipe does, under DeepSpeed, on one of the recipe's slots", () => {
    const recipe = parseRunConfig(JSON.parse(readFileSync('configs/lawgpt.json', 'utf8'))).sft;
    const row = plan(false).rows.find((r) => r.name.includes('LaWGPT'))!;
    const config = row.config as RunConfig['sft'];
    expect(recipe.deepspeed!.hosts).toEqual([{ host: 'localhost', slots: 8 }]);
    expect(config.deepspeed!.hosts).toEqual([{ host: 'localhost', slots: 1 }]);
    expect({ ...config.deepspeed, hosts: undefined }).toEqual({ ...recipe.deepspeed, hosts: undefined });
    expect([config.micro_batch_size, config.global_batch_size, config.lora, config.cutoff_len]).toEqual([recipe.micro_batch_size, recipe.global_batch_size, recipe.lora, recipe.cutoff_len]);
    // One slot is the rank itself, with the environment DeepSpeed's launcher would give it.
    expect(row.launcher!.slice(0, 2)).toEqual(['-m', 'lawgpt_trainer']);
    expect(row.launcher_env).toMatchObject({ RANK: '0', WORLD_SIZE: '1' });
  });

  it('launches the trainer as the activity does, waiting for its request', () => {
    for (const row of plan(false).rows.filter((r) => r.launcher)) {
      expect(row.launcher!.slice(-5)).toEqual(['lawgpt_trainer', row.stage, '--request', '{request}', '--wait-for-request']);
    }
  });
});
