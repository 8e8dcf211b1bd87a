// Try a trained model:   npm run generate -- --run <workflowId> [--prompt "..."]...
//                     or npm run generate -- --model s3://bucket/runs/<id>/sft/model/ [--prompt "..."]
// Fetches the model from S3 (once; kept under .state/models/) and answers with the shared prompt
// template through `python -m lawgpt_trainer.generate`; without --prompt it asks interactively.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { createS3Client, downloadArtifact } from './activities/s3.js';
import { trainerEnv } from './activities/trainer-process.js';
import { CliError, existing } from './cli/runs.js';
import { EXIT_INVALID_INPUT } from './common/contract.js';
import type { PipelineResult } from './common/run.js';
import { connectTemporal, loadSettings, type Settings } from './common/settings.js';

const MODELS = '.state/models';

/** The newest model a finished run produced: the instruction-tuned one, else the pretrained one. */
async function modelOfRun(settings: Settings, workflowId: string): Promise<string> {
  const { handle, description } = await existing(await connectTemporal(settings), workflowId);
  const state = description.status.name;
  if (state !== 'COMPLETED') throw new Error(`run ${workflowId} is ${state.toLowerCase()}, not completed: it has no final model yet`);
  const result: PipelineResult = await handle.result();
  const model = result.stages.sft?.outputs.model ?? result.stages.pretrain?.outputs.model ?? result.stages.base?.outputs.model;
  if (!model) throw new Error(`run ${workflowId} produced no model`);
  return model;
}

const USAGE = 'usage: npm run generate -- (--run <workflowId> | --model s3://.../model/) [--prompt "..."]... [--max-new-tokens N] [--temperature T]';

async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        run: { type: 'string' },
        model: { type: 'string' },
        prompt: { type: 'string', multiple: true },
        'max-new-tokens': { type: 'string' },
        temperature: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    return EXIT_INVALID_INPUT;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!values.run === !values.model) {
    console.error(USAGE);
    return EXIT_INVALID_INPUT;
  }
  if (values.model && !values.model.startsWith('s3://')) {
    console.error(`--model ${values.model}: expected an s3:// URI\n${USAGE}`);
    return EXIT_INVALID_INPUT;
  }
  const settings = loadSettings();
  const found = values.model ?? (await modelOfRun(settings, values.run!));
  const uri = found.endsWith('/') ? found : `${found}/`;
  // One local copy per model URI; it is renamed into place only once complete.
  const local = resolve(MODELS, createHash('sha256').update(uri).digest('hex').slice(0, 16));
  if (!existsSync(local)) {
    console.error(`fetching ${uri}`);
    const partial = `${local}.partial`;
    await rm(partial, { recursive: true, force: true });
    await downloadArtifact(createS3Client(settings), uri, partial);
    await rename(partial, local);
  }

  const args = ['-m', 'lawgpt_trainer.generate', '--model', local];
  for (const question of values.prompt ?? []) args.push('--prompt', question);
  if (values['max-new-tokens']) args.push('--max-new-tokens', values['max-new-tokens']);
  if (values.temperature) args.push('--temperature', values.temperature);
  const child = spawn(settings.LAWGPT_PYTHON, args, { stdio: 'inherit', env: trainerEnv() });
  return new Promise((done, fail) => {
    child.on('error', fail);
    child.on('close', (code) => done(code ?? 1));
  });
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(err instanceof CliError ? err.code : 1);
  },
);
