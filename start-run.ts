// The pipeline's command line: start runs, and list, watch and steer them.
//   tsx start-run.ts <config.json> [--follow]          (short for `start`)
//   tsx start-run.ts start <config> [--set path=value ...] [--no-cache] [--follow] [--dry-run]
//   tsx start-run.ts list [--status running|completed|failed|cancelled] [--corpus URI] [--limit N]
//   tsx start-run.ts status|follow|cancel|pause|resume|approve <run>
//   tsx start-run.ts report <run> [--out file.html]
// Exit codes: 0 ok, 1 the run failed, 2 invalid input (missing data included), 3 run not found,
// Temporal or S3 unreachable, or no worker to answer. An expected error is one line on stderr,
// never a stack trace. A config is validated before anything is contacted.
import { existsSync, readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { createS3Client } from './activities/s3.js';
import { trainerVersion } from './activities/trainer-process.js';
import { formatPlan, missingInputs, planRun } from './cli/plan.js';
import { fetchReport } from './cli/report.js';
import { CliError, control, EXIT, follow, followRun, formatResult, listRuns, runStatus, uiLink, unreachable, type ListStatus } from './cli/runs.js';
import { ConfigError, parseRunConfig, type RunConfig } from './common/config.js';
import { newRunId, WORKFLOW_TYPE } from './common/run.js';
import { connectTemporal, loadSettings } from './common/settings.js';
import { runMetadata, runSearchAttributes } from './workflows/definitions.js';

const COMMANDS = ['start', 'list', 'status', 'follow', 'report', 'cancel', 'pause', 'resume', 'approve', 'help'];

/** `a.b.c=value` into `raw`: the value as JSON where it parses (numbers, booleans, lists), else as text. */
function applySet(raw: Record<string, unknown>, assignment: string) {
  const eq = assignment.indexOf('=');
  if (eq <= 0) throw new CliError(`--set ${assignment}: expected path=value`, EXIT.invalidInput);
  const path = assignment.slice(0, eq).split('.');
  const text = assignment.slice(eq + 1);
  let value: unknown = text;
  try {
    value = JSON.parse(text);
  } catch {
    // plain text
  }
  let node = raw;
  for (const key of path.slice(0, -1)) {
    if (typeof node[key] !== 'object' || node[key] === null) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[path[path.length - 1]] = value;
}

function readConfig(path: string, sets: string[]): RunConfig {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new ConfigError([`${path}: ${(err as Error).message}`]);
  }
  for (const assignment of sets) applySet(raw, assignment);
  return parseRunConfig(raw);
}

const settings = () => loadSettings();
const temporal = () => connectTemporal(settings());
const print = (text: string) => console.log(text);

async function start(path: string, options: { set: string[]; cache: boolean; follow: boolean; dryRun: boolean }) {
  const config = readConfig(path, options.set);
  if (!options.cache) config.runtime.cache = false;
  const env = settings();
  const s3 = createS3Client(env);
  const missing = await missingInputs(s3, config).catch((err: Error) => {
    throw new CliError(`cannot check the run's data in S3 (${env.LAWGPT_S3_ENDPOINT ?? 'AWS'}): ${err.name}: ${err.message.split('\n')[0]}`, EXIT.notFound);
  });
  if (missing.length) throw new CliError(`the run's data is not all there (${missing.length}):\n  ${missing.join('\n  ')}\nnothing was started.`, EXIT.invalidInput);
  if (options.dryRun) {
    print(formatPlan(config, await planRun(config, { s3, trainerVersion: () => trainerVersion(env.LAWGPT_PYTHON) })));
    return;
  }
  const client = await connectTemporal(env);
  const workflowId = newRunId(config.name, new Date());
  const handle = await client.workflow.start(WORKFLOW_TYPE, {
    workflowId,
    taskQueue: env.LAWGPT_TASK_QUEUE,
    args: [config],
    typedSearchAttributes: runSearchAttributes(config, 'cli'),
    ...runMetadata(config, 'cli'),
  });
  print(`started run ${workflowId}`);
  print(`  Temporal UI: ${uiLink(env, workflowId, handle.firstExecutionRunId)}`);
  if (!options.follow) return;
  print(formatResult(await followRun(client, handle)));
  print(`run ${workflowId} completed`);
}

function program(): Command {
  const cli = new Command('start-run')
    .description('Start LaWGPT pipeline runs and list, watch and steer them (Temporal at $TEMPORAL_ADDRESS).')
    .exitOverride()
    .showHelpAfterError('(add --help for usage)');
  cli
    .command('start')
    .description('validate a run config and start a run (nothing is started if it is invalid)')
    .argument('<config>', 'run config file, e.g. configs/demo.json')
    .option('--set <path=value...>', 'override config fields, e.g. --set pretrain.max_steps=100', [])
    .option('--no-cache', 'run every stage, even where an identical one completed before')
    .option('--follow', 'follow the run live until it ends', false)
    .option('--dry-run', 'print the plan (stages, cache hits, input sizes, tokens, compute) and start nothing', false)
    .action((path: string, options) => start(path, options));
  cli
    .command('list')
    .description('list pipeline runs, newest first')
    .addOption(new Option('--status <status>', 'only runs in this state').choices(['running', 'completed', 'failed', 'cancelled']))
    .option('--corpus <uri>', 'only runs on this corpus (data.corpus)')
    .option('--limit <n>', 'at most this many', (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new CliError(`--limit ${v}: expected a positive whole number`, EXIT.invalidInput);
      return n;
    }, 20)
    .action(async (options: { status?: ListStatus; corpus?: string; limit: number }) => {
      const lines = await listRuns(await temporal(), options);
      print(lines.length ? ['run\tstate\tstage\tname\ttrigger\tcorpus\tstarted', ...lines].join('\n') : 'no runs');
    });
  cli.command('status').description('stages, current step and loss, checkpoints and artifacts of a run').argument('<run>').action(async (run: string) => print(await runStatus(await temporal(), settings(), run)));
  cli
    .command('follow')
    .description('follow a run live until it ends (exit 1 if it fails)')
    .argument('<run>')
    .action(async (run: string) => print(formatResult(await follow(await temporal(), run))));
  cli
    .command('report')
    .description("save a run's report page (charts, costs, lineage): the one it wrote when it ended, or one built now while it runs")
    .argument('<run>')
    .option('--out <file.html>', 'where to save it (its report.json goes beside it)')
    .action(async (run: string, options: { out?: string }) => {
      const out = options.out ?? `${run}.report.html`;
      // The page must be .html: its data is saved beside it as <name>.json, and a page named .json
      // would overwrite what the user kept under that name.
      if (!/\.html?$/.test(out)) throw new CliError(`--out ${out}: the report is a page; name it .html (its data is saved beside it as .json)`, EXIT.invalidInput);
      const env = settings();
      print(await fetchReport(await temporal(), createS3Client(env), run, out));
    });
  for (const [action, description] of [
    ['cancel', 'cancel a run: its stage commits a checkpoint and stops'],
    ['pause', 'pause a run: its stage commits a checkpoint and frees the machine'],
    ['resume', 'resume a paused run from its checkpoint'],
    ['approve', 'approve the stage a run waits for (runtime.approve_before)'],
  ] as const) {
    cli.command(action).description(description).argument('<run>').action(async (run: string) => print(await control(await temporal(), run, action)));
  }
  return cli;
}

async function main(argv: string[]): Promise<number> {
  // `start-run.ts <config> [--follow]` is short for `start <config> [--follow]`.
  const short = argv[0] && !argv[0].startsWith('-') && !COMMANDS.includes(argv[0]);
  if (short && !existsSync(argv[0]) && !argv[0].endsWith('.json')) {
    console.error(`error: '${argv[0]}' is neither a command (${COMMANDS.join(', ')}) nor a config file`);
    return EXIT.invalidInput;
  }
  const args = short ? ['start', ...argv] : argv;
  try {
    await program().parseAsync(args, { from: 'user' });
    return EXIT.ok;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT.ok : EXIT.invalidInput;
    if (err instanceof ConfigError) {
      console.error(`${err.message}\nnothing was started.`);
      return EXIT.invalidInput;
    }
    const known = err instanceof CliError ? err : unreachable(err, process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233');
    console.error(known ? known.message : `error: ${(err as Error).message}`);
    return known ? known.code : EXIT.runFailed;
  }
}

main(process.argv.slice(2)).then((code) => process.exit(code));
