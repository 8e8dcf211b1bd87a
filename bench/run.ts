// `npm run bench [-- --quick] [-- --only P1,P4]`: each benchmark measures ours and a plain peer side
// by side on this machine, at least three times, and reports the ratio of the medians against its
// target. Results go to bench/results/<date>.json and the table in bench/README.md.
import { execFileSync, spawn } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { parseRunConfig, type RunConfig } from '../common/config.js';
import { checkpointUpload } from './checkpoint-upload.js';
import { goodput, resumeLatency } from './faults.js';
import { orchestration } from './orchestration.js';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { BENCH_DIR, median, ROOT, Services, type Benchmark, type BenchContext, type Measured } from './context.js';

const python = (script: string) => async (ctx: BenchContext) => runPython(ctx, script);

const BENCHMARKS: Benchmark[] = [
  { id: 'P1', name: 'orchestration-overhead', what: 'demo pipeline through Temporal + MinIO ÷ the same trainer commands from a plain shell script', metric: 'time', unit: 's', target: { max: 1.03 }, run: orchestration },
  { id: 'P2', name: 'checkpoint-upload', what: 'checkpoint-shaped folder to MinIO, our uploader ÷ mc cp --recursive', metric: 'throughput', unit: 'MiB/s', target: { min: 1.0 }, run: checkpointUpload },
  { id: 'P3', name: 'goodput-under-faults', what: 'useful steps ÷ steps executed, trainer SIGKILLed at random', metric: 'ratio', unit: '', target: { min: 0.95 }, run: goodput },
  { id: 'P4', name: 'corpus-preparation', what: 'packing.prepare ÷ datasets.map(batched=True, num_proc=N), same tokenizer and block size', metric: 'throughput', unit: 'chars/s', target: { min: 1.0 }, run: python('corpus_prep.py') },
  { id: 'P5', name: 'trainer-wrapper', what: 'steps/s of our trainer (events, checkpoint hand-over) ÷ a bare Hugging Face Trainer', metric: 'throughput', unit: 'steps/s', target: { min: 0.98 }, run: python('trainer_wrapper.py') },
  { id: 'P6', name: 'resume-latency', what: 'kill -> first new step ÷ (checkpoint download + model load, measured alone)', metric: 'time', unit: 's', target: { max: 1.2 }, run: resumeLatency },
  { id: 'P7', name: 'eval-throughput', what: 'held-out scoring, ours ÷ a plain batched loop with the same model and batch size', metric: 'throughput', unit: 'tokens/s', target: { min: 0.95 }, run: python('eval_throughput.py') },
  { id: 'P8', name: 'loss-memory', what: "memory of one micro-batch's fp16 logits and loss, forward and backward, ours (chunked) ÷ transformers' ForCausalLMLoss", metric: 'memory', unit: 'MiB', target: { max: 0.5 }, run: python('loss_memory.py') },
];

/** Runs `bench/<script>` in the trainer's Python with the context as its parameters; it prints its Measured as the last line. */
async function runPython(ctx: BenchContext, script: string): Promise<Measured> {
  const paramsFile = join(ctx.work, `params-${script}.json`);
  await writeFile(paramsFile, JSON.stringify({ config: ctx.config, shared_data: ctx.sharedData, work: ctx.work, quick: ctx.quick, repeats: ctx.repeats, cores: ctx.cores }));
  const child = spawn(ctx.python, [join(BENCH_DIR, script), '--params', paramsFile], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  let stdout = '';
  child.stdout.on('data', (chunk) => (stdout += chunk));
  const code = await new Promise((done) => child.on('close', done));
  if (code !== 0) throw new Error(`${script} exited with ${code}`);
  return JSON.parse(stdout.trim().split('\n').at(-1)!);
}

const stats = (xs: number[]) => ({ median: median(xs), min: Math.min(...xs), max: Math.max(...xs), values: xs });
const fmt = (x: number) => (Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 1 ? x.toFixed(2) : x.toPrecision(3));
const targetText = (t: Benchmark['target']) => (t.max !== undefined ? `<=${t.max}` : `>=${t.min}`);

function summarise(bench: Benchmark, measured: Measured) {
  const ours = stats(measured.ours);
  const peer = measured.peer ? stats(measured.peer) : undefined;
  const ratio = peer ? ours.median / peer.median : ours.median;
  const ok = bench.target.max !== undefined ? ratio <= bench.target.max : ratio >= bench.target.min!;
  return { id: bench.id, name: bench.name, what: bench.what, metric: bench.metric, unit: bench.unit, target: targetText(bench.target), ours, peer, ratio, ok, notes: measured.notes ?? {} };
}
type Summary = ReturnType<typeof summarise>;

function print(s: Summary) {
  const range = (x: ReturnType<typeof stats>) => `${fmt(x.median)} ${s.unit} (min ${fmt(x.min)}, max ${fmt(x.max)}, n=${x.values.length})`.replace(/ \(/, s.unit ? ' (' : '(');
  console.log(`\n${s.id} ${s.what}`);
  console.log(`  ours: ${range(s.ours)}`);
  if (s.peer) console.log(`  peer: ${range(s.peer)}`);
  for (const [key, value] of Object.entries(s.notes)) console.log(`  ${key}: ${typeof value === 'number' ? fmt(value) : JSON.stringify(value)}`);
  console.log(`${s.id}-${s.name}: ratio=${s.ratio.toFixed(3)} target=${s.target} ${s.ok ? 'ok' : 'MISS'}`);
}

function machine() {
  const version = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8' }).trim();
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: availableParallelism(),
    memory_gib: Math.round(totalmem() / 2 ** 30),
    gpu: 'none',
    node: process.version,
    python: version(process.env.LAWGPT_PYTHON ?? 'python3', ['-c', 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__)']),
  };
}

/** Replaces the table between the README's result markers with this run's. */
async function updateReadme(date: string, quick: boolean, resultFile: string, host: ReturnType<typeof machine>, summaries: Summary[]) {
  const path = join(BENCH_DIR, 'README.md');
  const readme = await readFile(path, 'utf8');
  const rows = summaries.map(
    (s) => `| ${s.id} | ${s.what} | ${fmt(s.ours.median)} | ${s.peer ? fmt(s.peer.median) : '–'} | ${s.unit || 'ratio'} | ${s.ratio.toFixed(3)} | ${s.target} | ${s.ok ? 'ok' : 'MISS'} |`,
  );
  const table = [
    `Run of ${date}${quick ? ' (--quick)' : ''} on ${host.cpu}, ${host.cores} cores, ${host.memory_gib} GiB, no GPU; ${host.python}, Node ${host.node}. Medians of ${summaries[0]?.ours.values.length ?? 0} runs; min, max and the time each row was measured are in bench/results/${resultFile}.`,
    '',
    '| | Benchmark | Ours | Peer | Unit | Ratio | Target | |',
    '|---|---|---|---|---|---|---|---|',
    ...rows,
  ].join('\n');
  await writeFile(path, readme.replace(/(<!-- results -->\n)[\s\S]*?(\n<!-- \/results -->)/, `$1${table}$2`));
}

async function main() {
  Runtime.install({ logger: new DefaultLogger('ERROR') });
  const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, only: { type: 'string' } } });
  const quick = values.quick!;
  const chosen = values.only ? BENCHMARKS.filter((b) => values.only!.split(',').includes(b.id)) : BENCHMARKS;
  const work = join(ROOT, '.state', 'bench');
  await mkdir(work, { recursive: true });
  const raw = JSON.parse(await readFile(join(ROOT, 'configs', 'demo.json'), 'utf8'));
  const config: RunConfig = parseRunConfig(raw);
  const services = new Services(work);
  const ctx: BenchContext = {
    quick,
    repeats: 3,
    cores: availableParallelism(),
    work,
    python: process.env.LAWGPT_PYTHON ?? 'python3',
    sharedData: process.env.LAWGPT_SHARED_DATA!,
    config,
    services,
  };
  const started = Date.now();
  const summaries: (Summary & { measured_at: string })[] = [];
  // A benchmark that fails is reported and the others still run: one crash must not lose the
  // half hour of measurements around it.
  const failures: { id: string; error: string }[] = [];
  for (const bench of chosen) {
    const t0 = Date.now();
    try {
      const summary = { ...summarise(bench, await bench.run(ctx)), measured_at: new Date().toISOString() };
      summary.notes.bench_seconds = Math.round((Date.now() - t0) / 1000);
      print(summary);
      summaries.push(summary);
    } catch (err) {
      console.error(err);
      console.log(`${bench.id}-${bench.name}: failed (${(err as Error).message.split('\n')[0]})`);
      failures.push({ id: bench.id, error: (err as Error).message });
    }
  }
  await services.stop();
  const date = new Date().toISOString().slice(0, 10);
  const host = machine();
  // A partial run (--only) replaces its benchmarks' entries in the day's results of the same kind,
  // and every entry says when it was measured.
  const resultFile = `${date}${quick ? '-quick' : ''}.json`;
  const earlier = values.only ? await readFile(join(BENCH_DIR, 'results', resultFile), 'utf8').then(JSON.parse, () => undefined) : undefined;
  const ran = new Set(chosen.map((b) => b.id));
  const byId = (a: { id: string }, b: { id: string }) => a.id.localeCompare(b.id);
  const results = [...(earlier?.results ?? []).filter((r: Summary) => !ran.has(r.id)), ...summaries].sort(byId);
  const failed = [...(earlier?.failures ?? []).filter((f: { id: string }) => !ran.has(f.id) && !results.some((r: Summary) => r.id === f.id)), ...failures].sort(byId);
  await writeFile(join(BENCH_DIR, 'results', resultFile), JSON.stringify({ date, quick, machine: host, results, failures: failed }, null, 2) + '\n');
  // The table shows full runs; a quick one (a smoke check at small sizes) keeps to its JSON.
  if (!quick) await updateReadme(date, quick, resultFile, host, results);
  console.log(`\nall benchmarks took ${Math.round((Date.now() - started) / 1000)} s`);
  if (failures.length) process.exit(1);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
