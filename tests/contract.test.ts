import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ApplicationFailure } from '@temporalio/common';
import { trainerRequest } from '../activities/stage.js';
import { describeIssues, parseRunConfig } from '../common/config.js';
import { CONTRACT_VERSION, TrainerEvent, TrainerRequest } from '../common/contract.js';
import { CONTRACT_SCHEMA_PATH, renderContractSchema } from '../common/write-contract-schema.js';

describe('trainer contract', () => {
  it("trainer-py's schema is generated from the current contract (npm run contract)", () => {
    expect(readFileSync(CONTRACT_SCHEMA_PATH, 'utf8')).toBe(renderContractSchema());
  });

  it('accepts the events a trainer emits and rejects anything else', () => {
    expect(TrainerEvent.parse({ event: 'progress', step: 3, total_steps: 10, loss: 2.5 })).toMatchObject({ step: 3 });
    expect(TrainerEvent.safeParse({ event: 'progress', step: 3 }).success).toBe(false);
    expect(TrainerEvent.safeParse({ event: 'progress', step: 1, total_steps: 2, extra: 1 }).success).toBe(false);
    expect(TrainerEvent.safeParse({ event: 'shrug' }).success).toBe(false);
  });

  it('requires exactly the inputs each stage consumes', () => {
    const request = {
      contract_version: 1,
      run_id: 'r',
      output_dir: '/tmp/out',
      split: { heldout_percent: 10 },
      cleaning: { normalize_width: true, min_chars: 20, deduplicate: true },
      stage: 'vocab',
      config: { model_type: 'bpe', vocab_size: 100, character_coverage: 1, split_digits: true, byte_fallback: true, max_sentence_length: 10, input_sentence_size: 0 },
    };
    expect(TrainerRequest.safeParse({ ...request, inputs: { corpus: '/c', base_tokenizer: '/t' } }).success).toBe(true);
    expect(TrainerRequest.safeParse({ ...request, inputs: { corpus: '/c' } }).success).toBe(false);
    expect(TrainerRequest.safeParse({ ...request, inputs: { corpus: '/c', base_tokenizer: '/t', model: '/m' } }).success).toBe(false);
  });

  it("lets cached blocks stand in for pretrain's corpus, but not nothing", () => {
    const config = parseRunConfig(JSON.parse(readFileSync(new URL('../configs/demo.json', import.meta.url), 'utf8')));
    const request = { contract_version: CONTRACT_VERSION, run_id: 'r', output_dir: '/out', split: config.data.split, cleaning: config.data.cleaning, on_bad_record: 'fail', max_line_chars: 1000, stage: 'pretrain', config: config.pretrain };
    const models = { tokenizer: '/t', base_model: '/m' };
    expect(TrainerRequest.safeParse({ ...request, inputs: { ...models, corpus: '/c' } }).success).toBe(true);
    expect(TrainerRequest.safeParse({ ...request, inputs: { ...models, corpus: '/c', blocks: '/b' } }).success).toBe(true);
    expect(TrainerRequest.safeParse({ ...request, inputs: { ...models, blocks: '/b' } }).success).toBe(true);
    const neither = TrainerRequest.safeParse({ ...request, inputs: models });
    expect(neither.success ? [] : describeIssues(neither.error)).toEqual(['inputs: corpus or blocks is required']);
    // Said beside the inputs' other problems, not only once they are fixed.
    const alone = TrainerRequest.safeParse({ ...request, inputs: { base_model: '/m' } });
    expect(alone.success ? [] : describeIssues(alone.error)).toEqual([expect.stringMatching(/^inputs\.tokenizer: /), 'inputs: corpus or blocks is required']);
  });

  it('the activity checks each request it writes against the contract before a trainer starts', () => {
    const config = parseRunConfig(JSON.parse(readFileSync(new URL('../configs/demo.json', import.meta.url), 'utf8')));
    const task = { runId: 'r', stage: 'vocab' as const, split: config.data.split, cleaning: config.data.cleaning, config: config.vocab };
    expect(trainerRequest(task, { corpus: '/c', base_tokenizer: '/t' }, '/out').inputs).toEqual({ corpus: '/c', base_tokenizer: '/t' });

    const broken = () => trainerRequest({ ...task, config: { ...config.vocab, vocab_size: -1 } }, { corpus: '/c' }, '/out');
    expect(broken).toThrow(ApplicationFailure);
    expect(broken).toThrow(/the vocab request breaks the trainer contract: .*inputs.base_tokenizer.*config.vocab_size/);
    try {
      broken();
    } catch (err) {
      expect((err as ApplicationFailure).type).toBe('ContractViolation');
      expect((err as ApplicationFailure).nonRetryable).toBe(true);
    }
  });
});
