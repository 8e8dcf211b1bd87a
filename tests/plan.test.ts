// The dry-run's compute estimate (cli/plan.ts) on the shipped recipes: the size of the model a run
// is given, and the device each stage runs on. Reading the shape from S3 is in cli.test.ts.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { baseShape, deviceOf, parameters, stageCompute, type ModelShape } from '../cli/plan.js';
import { parseRunConfig } from '../common/config.js';

const recipe = (name: string, overrides: object = {}) =>
  parseRunConfig({ ...JSON.parse(readFileSync(new URL(`../configs/${name}.json`, import.meta.url), 'utf8')), ...overrides });

// LLaMA-7B's config.json, as the shape modelShape reads from it.
const llama7b: ModelShape = { hidden: 4096, intermediate: 11008, layers: 32, heads: 32, kvHeads: 32, vocab: 32000, tied: false, from: 'llama-7b' };

describe('the dry-run estimate', () => {
  it("counts a given LLaMA-7B's parameters, and the vocabulary the vocab stage may add", () => {
    const bentsao = recipe('bentsao');
    // 6,738,415,616 as published, less the 266,240 weights of its RMSNorms, which the formula leaves out.
    expect(parameters(llama7b, bentsao)).toBe(6_738_415_616 - 266_240);
    const lawgpt = recipe('lawgpt');
    expect(parameters(llama7b, lawgpt) - parameters(llama7b, bentsao)).toBe(2 * lawgpt.vocab.vocab_size * 4096);
    expect(parameters({ ...llama7b, tied: true }, bentsao)).toBe(parameters(llama7b, bentsao) - 32000 * 4096);
  });

  it('estimates GPU time for the v100 profile and for stages sent to their own task queue, CPU time otherwise', () => {
    const lawgpt = recipe('lawgpt');
    expect(lawgpt.stages.map((stage) => deviceOf(stage, lawgpt))).toEqual(['CPU', 'GPU', 'GPU', 'GPU']);
    const demo = recipe('demo');
    expect(demo.stages.map((stage) => deviceOf(stage, demo))).toEqual(['CPU', 'CPU', 'CPU', 'CPU', 'CPU']);
    // The cpu profile trains on CPUs whatever queue the stage is sent to.
    const queued = recipe('demo', { runtime: { task_queues: { pretrain: 'lawgpt-gpu', sft: 'lawgpt-gpu' } } });
    expect(['pretrain', 'sft'].map((stage) => deviceOf(stage as 'pretrain' | 'sft', queued))).toEqual(['CPU', 'GPU']);
  });

  it("puts BenTsao's ten epochs of LoRA on a given LLaMA-7B in GPU-hours of that model, not of base.*", () => {
    const bentsao = recipe('bentsao');
    // 10 epochs of 1.2M tokens.
    const estimate = stageCompute('sft', bentsao, llama7b, 1.2e6);
    expect(estimate.device).toBe('GPU');
    expect(estimate.tokens).toBe(12e6);
    // 4 x 6.74B x 12M FLOPs at 30% of a V100's 125 TFLOP/s: 2.4 hours.
    expect(estimate.hours).toBeCloseTo((4 * parameters(llama7b, bentsao) * 12e6) / (125e12 * 0.3) / 3600, 6);
    expect(estimate.hours).toBeGreaterThan(2);
    expect(stageCompute('sft', bentsao, baseShape(bentsao), 1.2e6).hours).toBeLessThan(estimate.hours / 1000);
  });
});
