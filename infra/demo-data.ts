// Uploads the demo's slice of ../shared/data to the S3 locations a run config names:
//   tsx infra/demo-data.ts configs/demo.json
// A handful of statutes (one per category) and cases, a few hundred consultations and exam
// questions: enough for every stage to do real work in minutes on 2 cores. Prints what it
// uploaded with a token estimate, so a user can size a longer run.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { get_encoding } from 'tiktoken';
import { createS3Client, ensureBucket, parseS3Uri, putText } from '../activities/s3.js';
import { parseRunConfig, type RunConfig } from '../common/config.js';
import { loadSettings } from '../common/settings.js';

export const SHARED_DATA = process.env.LAWGPT_SHARED_DATA ?? new URL('../../shared/data', import.meta.url).pathname;

export interface DemoDataSize {
  statutes: number;
  cases: number;
  records: number;
}

export const DEMO_SIZE: DemoDataSize = { statutes: 12, cases: 10, records: 300 };

// Which file of ../shared/data feeds each record-file location of a run config.
const RECORD_SOURCES = {
  dialogue: 'dialogue/legal_consultation.jsonl',
  exam: 'exam/disc_law_eval_mcq.jsonl',
  instructions: 'instructions/judicial_exam_reasoning.jsonl',
  short_answer: 'exam/disc_law_eval_short_answer.jsonl',
} as const;
const STATUTE_BYTES = { min: 5_000, max: 40_000 };

function markdownFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((name) => name.endsWith('.md'))
    .map((name) => join(dir, name))
    .sort();
}

/** One mid-sized statute from each category in turn, so the slice spans the legal areas. */
function pickStatutes(root: string, count: number): string[] {
  const categories = readdirSync(root).sort();
  const pools = categories.map((c) =>
    markdownFiles(join(root, c)).filter((f) => {
      const size = statSync(f).size;
      return size >= STATUTE_BYTES.min && size <= STATUTE_BYTES.max;
    }),
  );
  const picked: string[] = [];
  for (let round = 0; picked.length < count && pools.some((p) => p.length > round); round++) {
    for (const pool of pools) if (pool[round] && picked.length < count) picked.push(pool[round]);
  }
  return picked;
}

/** Every n-th line, so the slice mixes subjects and sources instead of taking the first block. */
function spreadLines(path: string, count: number): string {
  const lines = readFileSync(path, 'utf8').split('\n').filter((l) => l.trim());
  const stride = Math.max(1, Math.floor(lines.length / count));
  return lines.filter((_, i) => i % stride === 0).slice(0, count).join('\n') + '\n';
}

export async function uploadDemoData(s3: S3Client, data: RunConfig['data'], size: DemoDataSize = DEMO_SIZE, shared = SHARED_DATA) {
  if (!data.corpus) throw new Error('the demo data needs data.corpus in the config');
  const corpusRoot = join(shared, 'corpus');
  const documents = [
    ...pickStatutes(join(corpusRoot, 'statutes'), size.statutes),
    ...markdownFiles(join(corpusRoot, 'cases')).slice(0, size.cases),
  ];
  const records = Object.entries(RECORD_SOURCES).flatMap(([name, source]) => {
    const uri = data[name as keyof typeof RECORD_SOURCES];
    return uri ? [{ uri, source }] : [];
  });
  const corpus = data.corpus;
  const buckets = new Set([corpus, ...records.map((r) => r.uri)].map((u) => parseS3Uri(u).bucket));
  for (const bucket of buckets) await ensureBucket(s3, bucket);

  const encoding = get_encoding('cl100k_base');
  let chars = 0;
  let tokens = 0;
  try {
    for (const path of documents) {
      const text = readFileSync(path, 'utf8');
      chars += text.length;
      tokens += encoding.encode(text).length;
      await putText(s3, corpus + relative(corpusRoot, path), text);
    }
  } finally {
    encoding.free();
  }
  for (const { uri, source } of records) await putText(s3, uri, spreadLines(join(shared, source), size.records));
  return { documents: documents.length, chars, cl100kTokens: tokens, records: records.map((r) => r.uri) };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const config = parseRunConfig(JSON.parse(readFileSync(process.argv[2] ?? 'configs/demo.json', 'utf8')));
  const stats = await uploadDemoData(createS3Client(loadSettings()), config.data);
  console.log(`uploaded ${stats.documents} legal documents (${stats.chars} characters, ~${stats.cl100kTokens} cl100k tokens) to ${config.data.corpus}`);
  for (const uri of stats.records) console.log(`uploaded ${DEMO_SIZE.records} records to ${uri}`);
}
