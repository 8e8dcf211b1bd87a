// Try a trained model:   npm run generate -- --run <workflowId> [--prompt "..."]...
//                     or npm run generate -- --model s3://bucket/runs/<id>/sft/model/ [--prompt "..."]
// Fetches the model from S3 (once; kept under .state/models/) and answers with the shared prompt
// template through `python -m lawgpt_trainer.generate`; without --prompt it asks interactively.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { createS3Client, downloadArtifact, parseS3Uri } from './activities/s3.js';
import { trainerEnv } from './activities/trainer-process.js';
import { EXIT_INVALID_INPUT } from './common/contract.js';
import type { PipelineResult } from './common/run.js';
import { loadSettings, type Settings } from './common/settings.js';

/** The newest model a finished run produced: the instruction-tuned one, else the pretrained one. */
async function modelOfRun(settings: Settings, workflowId: string): Promise<string> {
  const client = new Client({ connection: await Connection.connect({ address: settings.TEMPORAL_ADDRESS }), namespace: settings.TEMPORAL_NAMESPACE });
  const result: PipelineResult = await client.workflow.getHandle(workflowId).result();
  const model = result.stages.sft?.outputs.model ?? result.stages.pretrain?.outputs.model ?? result.stages.base?.outputs.model;
  if (!model) throw new Error(`run ${workflowId} produced no model`);
  return model;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      run: { type: 'string' },
      model: { type: 'string' },
      prompt: { type: 'string', multiple: true },
      'max-new-tokens': { type: 'string' },
      temperature: { type: 'string' },
    },
  });
  if (!values.run === !values.model) {
    console.error('usage: npm run generate -- (--run <workflowId> | --model s3://.../model/) [--prompt "..."]... [--max-new-tokens N] [--temperature T]');
    return EXIT_INVALID_INPUT;
  }
  const settings = loadSettings();
  const uri = values.model ?? (await modelOfRun(settings, values.run!));
  const { bucket, key } = parseS3Uri(uri.endsWith('/') ? uri : `${uri}/`);
  const local = resolve('.state/models', bucket, key);
  if (!existsSync(join(local, 'config.json'))) {
    console.error(`fetching ${uri}`);
    await downloadArtifact(createS3Client(settings), uri.endsWith('/') ? uri : `${uri}/`, local);
  }

  const args = ['-m', 'lawgpt_trainer.generate', '--model', local];
  for (const question of values.prompt ?? []) args.push('--prompt', question);
  if (values['max-new-tokens']) args.push('--max-new-tokens', values['max-new-tokens']);
  if (values.temperature) args.push('--temperature', values.temperature);
  const child = spawn(settings.LAWGPT_PYTHON, args, { stdio: 'inherit', env: trainerEnv() });
  return new Promise((done) => child.on('close', (code) => done(code ?? 1)));
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  },
);
