import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError, parseRunConfig } from '../common/config.js';
import { stageTask } from '../common/run.js';
import { inputsOf, STAGES } from '../common/stages.js';

const read = (name: string) => JSON.parse(readFileSync(new URL(`../configs/${name}`, import.meta.url), 'utf8'));
const demo = read('demo.json');

function problems(raw: unknown): string[] {
  try {
    parseRunConfig(raw);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

describe('run config', () => {
  it('accepts the demo config and fills every default', () => {
    const config = parseRunConfig(demo);
    expect(config.stages).toEqual(['base', 'vocab', 'pretrain', 'sft', 'eval']);
    expect(config.sft.lora.target_modules).toEqual(['q_proj', 'v_proj']);
    expect(config.runtime.max_attempts).toBe(3);
  });

  it('names every wrong field at once', () => {
    const bad = { ...demo, bucket: 'Not_A_Bucket', pretrain: { ...demo.pretrain, max_steps: -1 }, sft: { ...demo.sft, lora: { r: 8, alfa: 16 } } };
    const found = problems(bad);
    expect(found).toHaveLength(3);
    expect(found.join('\n')).toMatch(/^bucket: /m);
    expect(found.join('\n')).toMatch(/^pretrain\.max_steps: /m);
    expect(found.join('\n')).toMatch(/^sft\.lora: unknown field\(s\) alfa/m);
  });

  it('requires the data locations as S3 URIs, the corpus as a folder', () => {
    const found = problems({ ...demo, data: { corpus: 's3://lawgpt/corpus', dialogue: '/tmp/d.jsonl' } });
    expect(found).toEqual(['data.corpus: must end with "/" (a folder)', 'data.dialogue: must look like s3://bucket/key']);
  });

  it('hands a knowledge graph to sft alone', () => {
    const config = parseRunConfig({ ...demo, data: { ...demo.data, knowledge: 's3://lawgpt/cmekg.json' } });
    const takers = STAGES.filter((stage) => inputsOf(stage, config.data, {}).knowledge);
    expect(takers).toEqual(['sft']);
    expect(inputsOf('sft', config.data, {}).knowledge).toBe('s3://lawgpt/cmekg.json');
  });

  it("takes the exam's own held-out share, up to all of it", () => {
    const split = (exam_heldout_percent: number) => problems({ ...demo, data: { ...demo.data, split: { heldout_percent: 2, exam_heldout_percent } } });
    expect(split(100)).toEqual([]);
    expect(split(0)).toEqual(['data.split.exam_heldout_percent: Too small: expected number to be >=1']);
    expect(split(101)).toEqual(['data.split.exam_heldout_percent: Too big: expected number to be <=100']);
    // Only the stages that read the exam are told its share: changing it re-keys no other stage's cache.
    const config = parseRunConfig({ ...demo, data: { ...demo.data, split: { heldout_percent: 2, exam_heldout_percent: 100 } } });
    const splits = Object.fromEntries(config.stages.map((stage) => [stage, stageTask('run', config, stage, {}).split]));
    expect(splits).toEqual({
      base: { heldout_percent: 2 },
      vocab: { heldout_percent: 2 },
      pretrain: { heldout_percent: 2 },
      sft: { heldout_percent: 2, exam_heldout_percent: 100 },
      eval: { heldout_percent: 2, exam_heldout_percent: 100 },
    });
  });

  it('requires some instruction data when the run includes sft', () => {
    const corpusOnly = { ...demo, data: { corpus: demo.data.corpus } };
    expect(problems(corpusOnly)).toEqual(['data: sft needs instruction data: set at least one of dialogue, exam, instructions, knowledge']);
    expect(problems({ ...corpusOnly, stages: ['base', 'vocab', 'pretrain'] })).toEqual([]);
    expect(problems({ ...corpusOnly, data: { ...corpusOnly.data, instructions: 's3://lawgpt/i.jsonl' } })).toEqual([]);
    expect(problems({ ...corpusOnly, data: { ...corpusOnly.data, knowledge: 's3://lawgpt/cmekg.json' } })).toEqual([]);
  });

  it('merges a word list alone only when one is given', () => {
    expect(problems({ ...demo, vocab: { train_sentencepiece: false } })).toEqual([
      'vocab.train_sentencepiece: with train_sentencepiece false, data.vocab_words must give the words to merge',
    ]);
    expect(problems({ ...demo, vocab: { train_sentencepiece: false }, data: { ...demo.data, vocab_words: 's3://lawgpt/words.txt' } })).toEqual([]);
  });

  it('runs a leading part of the pipeline only', () => {
    expect(parseRunConfig({ ...demo, stages: ['base', 'vocab'] }).stages).toEqual(['base', 'vocab']);
    expect(problems({ ...demo, stages: ['base', 'pretrain', 'vocab'] })).toContainEqual(expect.stringMatching(/^stages: must be stages of the pipeline in its order/));
  });

  it('starts later in the pipeline only from given artifacts, and names what is missing', () => {
    expect(problems({ ...demo, stages: ['vocab', 'pretrain'] })).toEqual([
      "stages: vocab needs base's tokenizer: run base first, or give artifacts.base.tokenizer",
      "stages: pretrain needs base's model: run base first, or give artifacts.base.model",
    ]);
    const base = { tokenizer: 's3://models/llama/', model: 's3://models/llama/' };
    expect(problems({ ...demo, stages: ['vocab', 'pretrain'], artifacts: { base } })).toEqual([]);
    expect(problems({ ...demo, stages: ['base', 'vocab', 'pretrain'], artifacts: { sft: { weights: 's3://models/x' } } })).toEqual([
      'artifacts.sft.weights: must end with "/" (a folder)',
      'artifacts.sft.weights: sft has no output weights (it has adapter, model)',
    ]);
    expect(problems({ ...demo, artifacts: { base } })).toEqual(['artifacts.base: base runs in this run, so its outputs cannot be given']);
  });

  it('ships the LaWGPT and BenTsao recipes with their published values', () => {
    const lawgpt = parseRunConfig(read('lawgpt.json'));
    expect(lawgpt.stages).toEqual(['vocab', 'pretrain', 'sft', 'eval']);
    expect(lawgpt.vocab.vocab_size).toBe(20000);
    expect(lawgpt.pretrain).toMatchObject({ epochs: 1, micro_batch_size: 8, global_batch_size: 128, learning_rate: 3e-4, block_size: 1024, method: 'lora' });
    expect(lawgpt.pretrain.lora).toMatchObject({ r: 16, alpha: 32, dropout: 0.05, target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'] });
    expect(lawgpt.pretrain.deepspeed).toMatchObject({ profile: 'v100', zero_stage: 2, gradient_checkpointing: 'auto', hosts: [{ host: 'localhost', slots: 8 }] });
    // 64 sequences a step, as one GPU took them 8 x 8, over the node's 8 GPUs.
    expect(lawgpt.sft).toMatchObject({ epochs: 20, micro_batch_size: 8, global_batch_size: 64, cutoff_len: 256 });
    expect(lawgpt.sft.deepspeed).toMatchObject({ profile: 'v100', zero_stage: 2, gradient_checkpointing: 'auto', hosts: [{ host: 'localhost', slots: 8 }] });
    expect(lawgpt.sft.lora).toMatchObject({ r: 8, alpha: 16, target_modules: ['q_proj', 'v_proj'] });

    const bentsao = parseRunConfig(read('bentsao.json'));
    expect(bentsao.stages).toEqual(['sft']);
    expect(bentsao.artifacts.pretrain?.model).toMatch(/^s3:\/\//);
    expect(bentsao.sft).toMatchObject({ epochs: 10, micro_batch_size: 16, gradient_accumulation_steps: 8 });
    expect(bentsao.pretrain.deepspeed).toBeUndefined();
  });

  it('needs the corpus only for the stages that read it, and checks gates', () => {
    const sftOnly = { ...demo, stages: ['sft'], artifacts: { pretrain: { model: 's3://models/llama/' } } };
    expect(problems({ ...sftOnly, data: { instructions: demo.data.instructions } })).toEqual([]);
    expect(problems({ ...demo, data: { instructions: demo.data.instructions } })).toEqual(['data.corpus: required by vocab, pretrain, eval']);
    expect(problems({ ...demo, gates: { eval: { exam_accuracy: {} }, train: {} } })).toEqual([
      'gates.eval.exam_accuracy: set min, max or both',
      'gates: unknown field(s) train',
    ]);
  });

  it('takes a task queue per stage, naming a wrong stage or queue', () => {
    expect(parseRunConfig({ ...demo, runtime: { task_queues: { pretrain: 'lawgpt-gpu' } } }).runtime.task_queues).toEqual({ pretrain: 'lawgpt-gpu' });
    expect(problems({ ...demo, runtime: { task_queues: { train: 'gpu', sft: 'no spaces' } } })).toEqual([
      'runtime.task_queues.sft: a plain queue name',
      'runtime.task_queues: unknown field(s) train',
    ]);
  });

  it('defaults each phase to LaWGPT\'s LoRA settings', () => {
    const config = parseRunConfig({ ...demo, pretrain: {}, sft: {} });
    expect(config.pretrain.method).toBe('lora');
    expect(config.pretrain.lora).toEqual({
      r: 16,
      alpha: 32,
      dropout: 0.05,
      target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'],
      modules_to_save: ['embed_tokens', 'lm_head'],
    });
    expect(config.sft.lora).toEqual({ r: 8, alpha: 16, dropout: 0.05, target_modules: ['q_proj', 'v_proj'], modules_to_save: [] });
    expect(config.pretrain.deepspeed).toBeUndefined();
  });

  it('checks a DeepSpeed section and the global batch against its processes before anything starts', () => {
    const hosts = [
      { host: 'node-1', slots: 8 },
      { host: 'node-2', slots: 8 },
    ];
    const ok = parseRunConfig({ ...demo, pretrain: { micro_batch_size: 8, global_batch_size: 128, deepspeed: { profile: 'v100', hosts, master_addr: 'node-1' } } });
    expect(ok.pretrain.deepspeed).toMatchObject({ zero_stage: 2, master_port: 29500 });
    const zeroStage = (pretrain: object) => parseRunConfig({ ...demo, pretrain }).pretrain.deepspeed?.zero_stage;
    expect(zeroStage({ method: 'full', deepspeed: { profile: 'v100' } })).toBe('auto');
    expect(zeroStage({ method: 'full', deepspeed: { profile: 'v100', hosts: [{ host: 'localhost', slots: 1 }] } })).toBe(2);
    expect(zeroStage({ method: 'full', deepspeed: { profile: 'v100', hosts: [{ host: 'localhost', slots: 1 }], zero_stage: 3 } })).toBe(3);
    expect(zeroStage({ method: 'lora', deepspeed: { profile: 'v100', zero_stage: 3 } })).toBe(3);
    expect(zeroStage({ method: 'lora', deepspeed: { profile: 'v100', zero_stage: 'auto' } })).toBe('auto');
    expect(problems({ ...demo, pretrain: { micro_batch_size: 8, global_batch_size: 96, deepspeed: { profile: 'v100', hosts, master_addr: 'node-1' } } })).toEqual([
      'pretrain.global_batch_size: must be a multiple of micro_batch_size x processes (the sum of deepspeed.hosts slots, or 1)',
    ]);
    // Rank 0's address must reach it from every host; loopback hosts alone may share 127.0.0.1.
    expect(problems({ ...demo, pretrain: { micro_batch_size: 8, global_batch_size: 128, deepspeed: { profile: 'v100', hosts } } })).toEqual([
      "pretrain.deepspeed.master_addr: 127.0.0.1 is this machine to every host; with hosts on other machines, give the first host's address that all of them reach",
    ]);
    const loopbackHosts = [{ host: '127.0.0.1', slots: 1 }, { host: '127.0.0.2', slots: 1 }];
    expect(parseRunConfig({ ...demo, pretrain: { deepspeed: { profile: 'cpu', hosts: loopbackHosts } } }).pretrain.deepspeed?.master_addr).toBe('127.0.0.1');
    expect(parseRunConfig({ ...demo, pretrain: { deepspeed: { profile: 'v100', hosts: [{ host: 'node-1', slots: 8 }] } } }).pretrain.deepspeed?.master_addr).toBe('127.0.0.1');
    const checkpointing = (gradient_checkpointing: unknown) => parseRunConfig({ ...demo, pretrain: { deepspeed: { profile: 'v100', gradient_checkpointing } } }).pretrain.deepspeed?.gradient_checkpointing;
    expect([checkpointing(true), checkpointing(2), checkpointing(false), checkpointing('auto')]).toEqual([true, 2, false, 'auto']);
    const found = problems({ ...demo, pretrain: { deepspeed: { profile: 'a100', zero_stage: 4, gradient_checkpointing: 1, hosts: [{ host: 'bad host', slots: 0 }] } } });
    expect(found.map((p) => p.split(':')[0]).sort()).toEqual([
      'pretrain.deepspeed.gradient_checkpointing',
      'pretrain.deepspeed.hosts.0.host',
      'pretrain.deepspeed.hosts.0.slots',
      'pretrain.deepspeed.profile',
      'pretrain.deepspeed.zero_stage',
    ]);
  });

  it('compiles decoder layers only where ZeRO-3 does not gather weights inside them', () => {
    const compiled = (pretrain: object) => parseRunConfig({ ...demo, pretrain: { ...pretrain, compile: true } }).pretrain.compile;
    expect(parseRunConfig(demo).pretrain.compile).toBe(false);
    expect(compiled({ method: 'lora', deepspeed: { profile: 'v100' } })).toBe(true);
    expect(compiled({ method: 'full', deepspeed: { profile: 'v100', hosts: [{ host: 'localhost', slots: 1 }] } })).toBe(true);
    expect(compiled({ method: 'full' })).toBe(true);
    expect(parseRunConfig({ ...demo, sft: { ...demo.sft, compile: true } }).sft.compile).toBe(true);
    const refused =
      'pretrain.compile: cannot be true under ZeRO-3, whose hooks gather weights inside the compiled layers, nor under "auto", which may choose it (deepspeed.zero_stage 3 or "auto", the default for full training on several processes): set deepspeed.zero_stage to 2, or compile to "auto"';
    expect(problems({ ...demo, pretrain: { method: 'full', compile: true, deepspeed: { profile: 'v100' } } })).toEqual([refused]);
    expect(problems({ ...demo, pretrain: { method: 'lora', compile: true, deepspeed: { profile: 'v100', zero_stage: 3 } } })).toEqual([refused]);
    expect(problems({ ...demo, pretrain: { method: 'lora', compile: true, deepspeed: { profile: 'v100', zero_stage: 'auto' } } })).toEqual([refused]);
    expect(compiled({ method: 'full', deepspeed: { profile: 'v100', zero_stage: 2 } })).toBe(true);
    // "auto" leaves the choice to the trainer, which knows the ZeRO stage it trains under and its device.
    for (const deepspeed of [{ profile: 'v100' }, { profile: 'v100', zero_stage: 3 }, { profile: 'v100', zero_stage: 'auto' }]) {
      expect(parseRunConfig({ ...demo, pretrain: { method: 'full', compile: 'auto', deepspeed } }).pretrain.compile).toBe('auto');
    }
    expect(problems({ ...demo, pretrain: { compile: 'yes' } }).map((p) => p.split(':')[0])).toEqual(['pretrain.compile']);
    expect(parseRunConfig(read('lawgpt.json')).pretrain.compile).toBe('auto');
  });

  it('tunes instructions data parallel under sft.deepspeed, with its own recomputation setting there', () => {
    const sft = (section: object) => parseRunConfig({ ...demo, sft: { ...demo.sft, ...section } }).sft;
    expect(sft({}).deepspeed).toBeUndefined();
    expect(sft({ deepspeed: { profile: 'v100', hosts: [{ host: 'localhost', slots: 8 }] } }).deepspeed).toMatchObject({ zero_stage: 2, gradient_checkpointing: false });
    expect(sft({ deepspeed: { profile: 'v100', zero_stage: 3 } }).deepspeed?.zero_stage).toBe(3);
    expect(problems({ ...demo, sft: { ...demo.sft, gradient_checkpointing: 'auto', deepspeed: { profile: 'v100' } } })).toEqual([
      'sft.gradient_checkpointing: is for one process: under sft.deepspeed, set deepspeed.gradient_checkpointing instead',
    ]);
    expect(problems({ ...demo, sft: { ...demo.sft, compile: true, deepspeed: { profile: 'v100', zero_stage: 3 } } }).map((p) => p.split(':')[0])).toEqual(['sft.compile']);
    expect(sft({ compile: true, deepspeed: { profile: 'v100' } }).compile).toBe(true);
  });

  it('profiles only steps the stage will run', () => {
    expect(parseRunConfig({ ...demo, pretrain: { max_steps: 6, profiler: { start_step: 2 } } }).pretrain.profiler).toEqual({ start_step: 2, steps: 1 });
    expect(problems({ ...demo, pretrain: { max_steps: 6, profiler: { start_step: 5, steps: 3 } }, sft: { ...demo.sft, max_steps: 2, profiler: { start_step: 3 } } })).toEqual([
      'pretrain.profiler.start_step: the profiled steps must end by max_steps',
      'sft.profiler.start_step: the profiled steps must end by max_steps',
    ]);
    // With epochs the length is known only once the data is: the trainer profiles what runs.
    expect(problems({ ...demo, sft: { ...demo.sft, epochs: 1, max_steps: 2, profiler: { start_step: 3 } } })).toEqual([]);
    expect(problems({ ...demo, pretrain: { profiler: { start_step: 0, steps: 11 } } }).sort()).toEqual([
      'pretrain.profiler.start_step: Too small: expected number to be >0',
      'pretrain.profiler.steps: Too big: expected number to be <=10',
    ]);
  });
});
