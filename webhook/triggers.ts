// Which uploads start which runs: configs/triggers.json (or the file LAWGPT_WEBHOOK_TRIGGERS names),
// validated at start with every wrong field named, each trigger's run config included.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { z } from 'zod';
import { ConfigError, describeIssues, parseRunConfig, type RunConfig } from '../common/config.js';
import type { ObjectEvent } from './events.js';

// Uploading this object under a watched prefix ends the quiet period at once.
export const READY_OBJECT = '_READY';

const Trigger = z
  .object({
    name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'lower-case letters, digits and dashes'),
    bucket: z.string().min(3),
    // Key prefix watched; ends with "/" (a folder).
    prefix: z.string().regex(/^[^/].*\/$/, 'a folder key ending with "/"'),
    // Only keys ending with one of these count (all keys when absent).
    suffixes: z.array(z.string().min(1)).nonempty().optional(),
    // The run config to start, relative to the repository root; its data.corpus is replaced.
    config: z.string().min(1),
    // Seconds without a new object before the run starts: one run for a whole `mc cp --recursive`.
    quiet_seconds: z.number().int().min(1).max(86_400).default(30),
    // Each folder right under the prefix is its own corpus (prefix/2026-11-27/...), with its own run.
    versioned_folders: z.boolean().default(false),
  })
  .strict();
const TriggersFile = z.object({ triggers: z.array(Trigger).nonempty() }).strict();

export type Trigger = z.infer<typeof Trigger> & { runConfig: RunConfig };

/** A triggers file the webhook cannot start with; one line per problem. */
export class TriggersError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid triggers (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n  ${problems.join('\n  ')}`);
    this.name = 'TriggersError';
  }
}

/** The triggers of `path`, each with its run config parsed; TriggersError names every wrong field. */
export function loadTriggers(path: string, root = process.cwd()): Trigger[] {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new TriggersError([`${path}: ${(err as Error).message}`]);
  }
  const parsed = TriggersFile.safeParse(raw);
  if (!parsed.success) throw new TriggersError(describeIssues(parsed.error).map((issue) => `${path}: ${issue}`));
  const names = parsed.data.triggers.map((t) => t.name);
  const repeated = names.filter((n, i) => names.indexOf(n) !== i);
  if (repeated.length) throw new TriggersError([`${path}: trigger names must be unique: ${[...new Set(repeated)].join(', ')}`]);
  return parsed.data.triggers.map((trigger, i) => {
    try {
      return { ...trigger, runConfig: parseRunConfig(JSON.parse(readFileSync(resolve(root, trigger.config), 'utf8'))) };
    } catch (err) {
      const problems = err instanceof ConfigError ? err.problems : [(err as Error).message];
      throw new TriggersError(problems.map((problem) => `${path}: triggers.${i}.config (${trigger.config}): ${problem}`));
    }
  });
}

/** What an uploaded object means for a trigger: the corpus folder it belongs to, and whether it is the ready marker. */
export interface Upload {
  trigger: Trigger;
  /** s3://bucket/prefix/ (or prefix/<folder>/ for versioned folders): the run's data.corpus. */
  corpus: string;
  ready: boolean;
}

/** How a created object stands with one trigger: the upload it is, or why it is none (undefined: outside the trigger's prefix). */
function against(trigger: Trigger, event: ObjectEvent): Upload | string | undefined {
  if (event.bucket !== trigger.bucket || !event.key.startsWith(trigger.prefix)) return undefined;
  const rest = event.key.slice(trigger.prefix.length);
  let folder = trigger.prefix;
  if (trigger.versioned_folders) {
    const slash = rest.indexOf('/');
    if (slash <= 0) return `is directly under trigger ${trigger.name}'s prefix, in no version folder`;
    folder += rest.slice(0, slash + 1);
  }
  const ready = event.key === `${folder}${READY_OBJECT}`;
  // Any case, as the trainer reads the corpus: "判决.MD" is as much a document as "判决.md".
  const key = event.key.toLowerCase();
  if (!ready && trigger.suffixes && !trigger.suffixes.some((s) => key.endsWith(s.toLowerCase()))) return `does not end in one of trigger ${trigger.name}'s suffixes (${trigger.suffixes.join(', ')})`;
  return { trigger, corpus: `s3://${trigger.bucket}/${folder}`, ready };
}

/** The trigger an object event falls under, if any: created, in the bucket, under the prefix, with a watched suffix. */
export function matchUpload(triggers: Trigger[], event: ObjectEvent): Upload | undefined {
  if (!event.created) return undefined;
  for (const trigger of triggers) {
    const upload = against(trigger, event);
    if (typeof upload === 'object') return upload;
  }
  return undefined;
}

/** Why a created object matches no trigger, for the webhook's log: the reasons of the triggers whose prefix it is under. */
export function whyNoTrigger(triggers: Trigger[], event: ObjectEvent): string {
  const reasons = triggers.map((trigger) => against(trigger, event)).filter((r): r is string => typeof r === 'string');
  return reasons.length ? reasons.join('; ') : 'is under no trigger';
}
