// The `runStage` activity: one pipeline stage, start to finish, on this worker.
//   start the trainer (it imports its libraries meanwhile) and download inputs (and the newest
//   verified checkpoint) from S3 -> write the trainer request -> the trainer runs, its checkpoints
//   uploaded as they come -> upload outputs to S3
// Progress flows three ways: heartbeats (liveness and cancellation), a throttled signal to the
// workflow (its `status` query), and the worker's log.
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import { ApplicationFailure, CancelledFailure, Context } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import type { S3Client } from '@aws-sdk/client-s3';
import { describeIssues } from '../common/config.js';
import { CONTRACT_VERSION, EXIT_INVALID_INPUT, TENSORBOARD_DIR, TrainerRequest, type TrainerEvent } from '../common/contract.js';
import { lineageKey, type StageLineage } from '../common/report.js';
import type { StageProgress, StageResult, StageTask, StageUsage } from '../common/run.js';
import type { Settings } from '../common/settings.js';
import { STAGE_IO, STAND_INS } from '../common/stages.js';
import { progressSignal } from '../workflows/definitions.js';
import { CheckpointUploader, checkpointsPrefix, findResumePoint, type ResumePoint } from './checkpoints.js';
import { cacheKey, inputObjects, inputsHash, lookupStage, recordStage } from './stage-cache.js';
import { deletePrefix, downloadArtifact, isPlainPath, isRefusal, putJson, s3Uri, uploadDir, type ObjectInfo } from './s3.js';
import { blocksUri, fetchBlocks, hasBlocks, storeBlocks, usesBlocks } from './block-cache.js';
import { compileCacheUri, fetchCompileCache, storeCompileCache, usesCompileCache } from './compile-cache.js';
import { gitCommit } from './provenance.js';
import { stageMetrics } from './stage-metrics.js';
import { stallWatch, type Stall } from './stall-watch.js';
import { launchTrainer } from './trainer-process.js';

export interface StageDeps {
  s3: S3Client;
  settings: Pick<Settings, 'LAWGPT_PYTHON' | 'LAWGPT_WORK_DIR'> & Partial<Pick<Settings, 'LAWGPT_GIT_COMMIT'>>;
  /** Used to send progress to the workflow; without it progress only reaches heartbeats and logs. */
  temporal?: Client;
  /**
   * The trainer version (lawgpt_trainer.fingerprint()) of the code a trainer started now would run.
   * Asked afresh for every lookup, since the package is installed editable and may change under a
   * running worker; what is stored is keyed by the version the trainer itself reports on start.
   */
  trainerVersion: () => Promise<string>;
}

const artifactPrefix = (task: Pick<StageTask, 'bucket' | 'runId' | 'stage'>, output: string) =>
  s3Uri(task.bucket, `runs/${task.runId}/${task.stage}/${output}/`);

const HEARTBEAT_MS = 5_000;
// Created in the stage's folder to ask the trainer to checkpoint and stop (request.stop_file).
const STOP_FILE = 'STOP';
// Workflow ids become folder names and S3 keys.
const SAFE_RUN_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;

/** `relativePath` under `dir`; a trainer must not point the orchestrator anywhere else. */
function inside(dir: string, relativePath: string): string {
  const path = resolve(dir, relativePath);
  if (!path.startsWith(dir + sep)) throw ApplicationFailure.nonRetryable(`trainer reported a path outside its output folder: ${relativePath}`, 'ContractViolation');
  return path;
}

/**
 * The trainer's request for one stage of a run, its inputs as local paths; checked against the
 * contract before any trainer sees it, so a request the trainer would refuse never starts one.
 */
export function trainerRequest(
  task: Pick<StageTask, 'runId' | 'stage' | 'split' | 'cleaning' | 'records' | 'config'>,
  inputs: Record<string, string>,
  outputDir: string,
  extra: Pick<TrainerRequest, 'inputs_hash' | 'stop_file' | 'resume_from'> = {},
): TrainerRequest {
  const { runId, stage, split, cleaning, records, config } = task;
  const checked = TrainerRequest.safeParse({ contract_version: CONTRACT_VERSION, run_id: runId, stage, output_dir: outputDir, split, cleaning, ...records, inputs, config, ...extra });
  if (!checked.success) {
    throw ApplicationFailure.nonRetryable(`the ${stage} request breaks the trainer contract: ${describeIssues(checked.error).join('; ')}`, 'ContractViolation');
  }
  return checked.data;
}

/**
 * Rewrites a trainer's messages so that they name the S3 objects its inputs were downloaded from,
 * not the worker's local copies: `dialogue.jsonl:21` becomes `s3://bucket/data/dialogue.jsonl:21`.
 */
export function s3Names(local: Record<string, string>, uris: Record<string, string>): (text: string) => string {
  const pairs = Object.entries(local).flatMap(([name, path]) => (uris[name].endsWith('/') ? [[`${path}/`, uris[name]], [path, uris[name]]] : [[path, uris[name]]]));
  pairs.sort((a, b) => b[0].length - a[0].length);
  return (text) => pairs.reduce((t, [path, uri]) => t.replaceAll(path, uri), text);
}

/**
 * Promise.all that waits for every promise before failing with the first error: no download may
 * still be writing into the stage's folder once the failure has cleared it.
 */
async function allDone<T extends readonly unknown[]>(promises: T): Promise<{ -readonly [K in keyof T]: Awaited<T[K]> }> {
  const settled = await Promise.allSettled(promises);
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return settled.map((r) => (r as PromiseFulfilledResult<unknown>).value) as { -readonly [K in keyof T]: Awaited<T[K]> };
}

/** Worker options that stage activities rely on. */
export const STAGE_WORKER_OPTIONS = {
  // A cancel reaches an activity only with a heartbeat's answer, and heartbeats are throttled
  // (by default up to 60 s): keep that short so a cancelled trainer stops within seconds.
  maxHeartbeatThrottleInterval: '5 seconds',
  // One stage at a time: a training stage wants the whole machine (worker.ts takes LAWGPT_WORKER_SLOTS).
  maxConcurrentActivityTaskExecutions: 1,
} as const;

/** What the downloads tell the running trainer's event handling. */
interface Prepared {
  /** Local input paths in the trainer's messages, as the S3 objects they came from (s3Names). */
  named: (text: string) => string;
  /** Where tokenized blocks the trainer reports are cached; none when they came from the cache. */
  blocksFor?: (version: string) => string;
  /** Where compiled layers the trainer offers are cached; none when the stage's `compile` is false. */
  compileCacheFor?: (version: string) => string;
  /** The local copy of the checkpoint the trainer resumes from, until it has loaded it. */
  resumeCopy?: ResumePoint;
}

/**
 * Refuses, before the trainer starts, input folders holding objects that no local file can be
 * named after (isPlainPath): their download would fail the same way at every attempt.
 */
function refuseUnnameable(task: StageTask, objects: Record<string, ObjectInfo[]>): void {
  const unnameable = Object.entries(objects).flatMap(([name, listed]) => {
    const uri = task.inputs[name];
    if (!uri.endsWith('/')) return isPlainPath(uri.slice(uri.lastIndexOf('/') + 1)) ? [] : [`${name}: ${uri}`];
    return listed.filter((o) => !isPlainPath(o.key)).map((o) => `${name}: ${uri}${o.key}`);
  });
  if (unnameable.length === 0) return;
  const more = unnameable.length > 5 ? ` and ${unnameable.length - 5} more` : '';
  throw ApplicationFailure.nonRetryable(
    clip(`input objects whose keys are no plain path (an empty, '.' or '..' part, or one over 255 bytes), so no file can hold them; rename or remove them: ${unnameable.slice(0, 5).join(', ')}${more}`, FAILURE_MESSAGE_BYTES, 'start'),
    'InvalidInput',
  );
}

export function createStageActivities(deps: StageDeps) {
  /** Downloads every input (all at once) but those `leftOut`, exactly the objects `objects` lists for it. */
  async function fetchInputs(task: StageTask, objects: Record<string, ObjectInfo[]>, dir: string, leftOut: string[]): Promise<Record<string, string>> {
    const local = await allDone(
      Object.entries(task.inputs).filter(([name]) => !leftOut.includes(name)).map(async ([name, uri]) => {
        if (!objects[name]?.length) throw ApplicationFailure.nonRetryable(`input '${name}' not found: ${uri}`, 'InvalidInput');
        return [name, (await downloadArtifact(deps.s3, uri, join(dir, name), objects[name])).path] as const;
      }),
    );
    return Object.fromEntries(local);
  }

  async function runStage(task: StageTask): Promise<StageResult> {
    const ctx = Context.current();
    if (!SAFE_RUN_ID.test(task.runId)) throw ApplicationFailure.nonRetryable(`run id ${JSON.stringify(task.runId)} is not a plain name`, 'InvalidInput');
    // One folder per stage: a new attempt first clears what a killed earlier one left behind.
    const work = resolve(deps.settings.LAWGPT_WORK_DIR, task.runId, task.stage);
    await rm(work, { recursive: true, force: true });
    await mkdir(join(work, 'out'), { recursive: true });
    const reporter = progressReporter(task, deps.temporal);
    // Heartbeat for the whole stage, not per event or file: the trainer may be silent for minutes
    // (tokenising, saving) and one large file may take minutes to move, while a dead worker is
    // what the heartbeat timeout must detect.
    const beat = setInterval(() => ctx.heartbeat(reporter.latest()), HEARTBEAT_MS);
    try {
      ctx.log.info(`stage ${task.stage}: fetching inputs`, { inputs: task.inputs });
      // Listed once: the inputs hash and the block-cache key describe exactly what is downloaded.
      const objects = await inputObjects(deps.s3, task.inputs);
      refuseUnnameable(task, objects);
      const blocksFor = usesBlocks(task) ? (version: string) => blocksUri(task, objects, version) : undefined;
      const compileCacheFor = usesCompileCache(task) ? (version: string) => compileCacheUri(task, version) : undefined;
      const workerVersion = blocksFor || compileCacheFor ? await deps.trainerVersion() : '';
      const blocks = blocksFor?.(workerVersion);
      // Known before anything downloads: what cached blocks stand in for (the corpus) is not fetched.
      const blocksCached = blocks !== undefined && (await hasBlocks(deps.s3, blocks));
      const leftOut = blocksCached ? Object.entries(STAND_INS[task.stage] ?? {}).filter(([, standIn]) => standIn === 'blocks').map(([input]) => input) : [];
      const compileCache = compileCacheFor?.(workerVersion);
      const requestPath = join(work, 'request.json');

      // The trainer starts now and imports its libraries (seconds) while its inputs download.
      async function prepare(): Promise<Prepared> {
        // Inputs, cached blocks and compiled layers, and the checkpoint to resume from travel at the same time.
        const [inputs, cachedBlocks, compiled, resume] = await allDone([
          fetchInputs(task, objects, join(work, 'inputs'), leftOut),
          blocksCached && fetchBlocks(deps.s3, blocks, join(work, 'blocks')),
          compileCache &&
            fetchCompileCache(deps.s3, compileCache, join(work, 'compile-cache')).catch((err: Error) => {
              ctx.log.warn(`stage ${task.stage}: could not read the compile cache, compiling cold (${err.message})`);
              return undefined;
            }),
          findResumePoint(deps.s3, checkpointsPrefix(task), join(work, 'resume'), (m) => ctx.log.warn(m)),
        ]);
        if (blocksCached && !cachedBlocks) throw new Error(`the block cache's entry ${blocks} went away as the stage started; the retry tokenizes the corpus`);
        if (cachedBlocks) ctx.log.info(`stage ${task.stage}: tokenized blocks from the block cache ${blocks}${leftOut.length ? `, so ${leftOut.join(', ')} not downloaded` : ''}`);
        if (compiled) ctx.log.info(`stage ${task.stage}: compiled layers from the compile cache ${compileCache}`);
        if (resume) ctx.log.info(`stage ${task.stage}: resuming from checkpoint-${resume.step}`);
        const cached = { ...(cachedBlocks && { blocks: cachedBlocks }), ...(compiled && { compile_cache: compiled }) };
        const request = trainerRequest(task, { ...inputs, ...cached }, join(work, 'out'), {
          inputs_hash: inputsHash(objects),
          stop_file: join(work, STOP_FILE),
          ...(resume && { resume_from: resume.path }),
        });
        // Renamed into place whole: the waiting trainer reads it the moment it appears.
        await writeFile(`${requestPath}.part`, JSON.stringify(request, null, 2));
        await rename(`${requestPath}.part`, requestPath);
        return {
          named: s3Names({ ...inputs, ...cached }, { ...task.inputs, ...(blocks && { blocks }), ...(compileCache && { compile_cache: compileCache }) }),
          blocksFor: cachedBlocks ? undefined : blocksFor,
          compileCacheFor,
          resumeCopy: resume,
        };
      }

      const started = Date.now();
      const { completed, trainerVersion } = await runTrainer(task, requestPath, work, reporter, prepare);
      const result = { ...(await publish(task, work, completed)), usage: usageOf(completed.metrics, (Date.now() - started) / 1000) };
      await putJson(deps.s3, s3Uri(task.bucket, lineageKey(task.runId, task.stage)), await lineage(task, objects, trainerVersion));
      await recordStage(deps.s3, task, cacheKey(task, objects, trainerVersion), result).catch((err: Error) =>
        ctx.log.warn(`stage ${task.stage}: could not record it in the stage cache (${err.message})`),
      );
      return result;
    } catch (err) {
      throw refused(err, task.bucket);
    } finally {
      clearInterval(beat);
      await rm(work, { recursive: true, force: true });
    }
  }

  /**
   * Starts the trainer, waiting for its request, and runs `prepare` meanwhile (before it, when
   * ranks run on other hosts), which downloads the inputs and writes the request; says which
   * trainer version ran. Tokenized blocks the trainer reports go to the block cache (`blocksFor`
   * that version) in the background, and the compiled layers it offers to the compile cache.
   */
  async function runTrainer(
    task: StageTask,
    requestPath: string,
    work: string,
    reporter: ReturnType<typeof progressReporter>,
    prepare: () => Promise<Prepared>,
  ) {
    const ctx = Context.current();
    const out = join(work, 'out');
    let trainerVersion = '';
    let blocksUpload: Promise<unknown> = Promise.resolve();
    const compileCacheUploads: Promise<unknown>[] = [];
    // Until the request is written the trainer has read no input, and names none.
    let prepared: Prepared = { named: (text) => text };
    const attempt = { scheduledMs: ctx.info.currentAttemptScheduledTimestampMs, number: ctx.info.attempt };
    const metrics = stageMetrics(deps.s3, task, attempt, join(out, TENSORBOARD_DIR), (m) => ctx.log.warn(m));
    const uploader = new CheckpointUploader(deps.s3, checkpointsPrefix(task), task.runtime.keep_checkpoints, {
      committed(c) {
        ctx.log.info(`stage ${task.stage}: checkpoint-${c.step} committed to ${c.uri}`);
        reporter.checkpoint(c.step);
        metrics.checkpoint(c.step, c.evalLoss);
      },
      retrying(step, err, seconds) {
        ctx.log.warn(`stage ${task.stage}: checkpoint-${step} could not be uploaded (${err.message}); it is tried again in ${seconds} s, training goes on`);
      },
      failed(step, err) {
        ctx.log.warn(`stage ${task.stage}: checkpoint-${step} could not be uploaded (${err.message}) and is given up; training goes on`);
      },
    });
    // A training step is reported only once every rank has loaded the checkpoint it resumed from
    // (the step's collectives wait for all of them): from then on its local copy, as large as a
    // checkpoint (about 100 GB for a 7B trained in full), is dead weight on the disk that the
    // stage's own new checkpoints are saved to.
    const freeResumeCopy = (resume: ResumePoint) =>
      rm(resume.path, { recursive: true, force: true }).then(
        () => ctx.log.info(`stage ${task.stage}: the trainer has loaded checkpoint-${resume.step}; its local copy is deleted`),
        (err: Error) => ctx.log.warn(`stage ${task.stage}: could not delete the local copy of checkpoint-${resume.step} (${err.message})`),
      );
    const deepspeed = 'deepspeed' in task.config ? task.config.deepspeed : undefined;
    // On one host the trainer imports while the inputs download. Ranks on other hosts start once
    // the request is there: one left waiting there would outlive a failed download (nothing ends
    // it when pdsh goes), and a network filesystem may show the renamed request late.
    const waits = !deepspeed || deepspeed.hosts.length === 1;
    if (!waits) prepared = await prepare();
    // Stops the waiting trainer when its inputs cannot be had.
    const unprepared = new AbortController();
    // Stops a trainer that has gone silent the way a cancel does: one merely slow still saves a
    // checkpoint at its next step, and a hung one is killed after the grace period.
    const stall = stallWatch(task.stage, task.runtime.stall_timeout_seconds);
    stall.signal.addEventListener('abort', () => ctx.log.warn(`stage ${task.stage}: ${stalledFor(stall.stalled()!)}; stopping it`));
    const exited = launchTrainer({
      python: deps.settings.LAWGPT_PYTHON,
      stage: task.stage,
      requestPath,
      waitForRequest: waits,
      cwd: work,
      ...(deepspeed && { deepspeed }),
      stopFile: join(work, STOP_FILE),
      signal: AbortSignal.any([ctx.cancellationSignal, unprepared.signal, stall.signal]),
      stopGraceMs: task.runtime.stop_grace_seconds * 1000,
      onEvent: (event) => {
        stall.heard(event);
        if (event.event === 'started') trainerVersion = event.trainer_version;
        if (event.event === 'progress') {
          if (prepared.resumeCopy) freeResumeCopy(prepared.resumeCopy);
          prepared.resumeCopy = undefined;
          reporter.update({ stage: task.stage, step: event.step, totalSteps: event.total_steps, loss: event.loss });
          metrics.progress({ step: event.step, total_steps: event.total_steps, loss: event.loss, learning_rate: event.learning_rate });
        }
        if (event.event === 'checkpoint') {
          ctx.log.info(`stage ${task.stage}: checkpoint-${event.step} written in ${event.save_seconds.toFixed(1)} s, uploading`);
          uploader.submit(event.step, inside(out, event.path));
        }
        if (event.event === 'blocks' && prepared.blocksFor) {
          const blocksTarget = prepared.blocksFor(trainerVersion);
          blocksUpload = storeBlocks(deps.s3, inside(out, event.path), blocksTarget).then(
            () => ctx.log.info(`stage ${task.stage}: tokenized blocks cached at ${blocksTarget}`),
            (err: Error) => ctx.log.warn(`stage ${task.stage}: could not cache the tokenized blocks (${err.message})`),
          );
        }
        if (event.event === 'compile_cache' && prepared.compileCacheFor) {
          compileCacheUploads.push(
            storeCompileCache(deps.s3, inside(out, event.path), prepared.compileCacheFor(trainerVersion)).then(
              (uri) => ctx.log.info(`stage ${task.stage}: compiled layers cached at ${uri}`),
              (err: Error) => ctx.log.warn(`stage ${task.stage}: could not cache the compiled layers (${err.message})`),
            ),
          );
        }
        if (event.event === 'log') ctx.log[event.level === 'warning' ? 'warn' : 'info'](`[${task.stage}] ${prepared.named(event.message)}`);
      },
      onStderr: (line) => ctx.log.debug(`[${task.stage}] ${line}`),
    });
    // Awaited below, after the downloads: a trainer that cannot start must not go unhandled meanwhile.
    exited.catch(() => undefined);
    if (waits) {
      try {
        prepared = await prepare();
      } catch (err) {
        unprepared.abort();
        await exited.catch(() => undefined);
        throw err;
      }
    }
    const exit = await exited.finally(() => stall.end());
    // Checkpoints saved before a crash or a cancel are complete: commit them either way.
    await uploader.drain();
    await metrics.upload();
    await blocksUpload;
    await Promise.all(compileCacheUploads);
    await reporter.flush();
    if (ctx.cancellationSignal.aborted) throw stopped(task, ctx.cancellationSignal.reason);
    return { completed: outcome(task, exit, uploader.committed !== undefined, prepared.named, stall.stalled()), trainerVersion };
  }

  /** What the stage's outputs derive from (the objects listed for its inputs: those downloaded, and a corpus its cached blocks stood in for) and the code that ran it. */
  async function lineage(task: StageTask, objects: Record<string, ObjectInfo[]>, trainerVersion: string): Promise<StageLineage> {
    return {
      stage: task.stage,
      inputs: Object.entries(task.inputs).map(([name, uri]) => ({ name, uri, objects: objects[name] })),
      trainer_version: trainerVersion,
      git_commit: await gitCommit(deps.settings.LAWGPT_GIT_COMMIT),
    };
  }

  async function publish(task: StageTask, work: string, completed: Extract<TrainerEvent, { event: 'completed' }>): Promise<StageResult> {
    const expected = [...STAGE_IO[task.stage].outputs].sort();
    const reported = Object.keys(completed.outputs).sort();
    if (expected.join() !== reported.join()) {
      throw ApplicationFailure.nonRetryable(`trainer ${task.stage} reported outputs [${reported}], the contract says [${expected}]`, 'ContractViolation');
    }
    const outputs: Record<string, string> = {};
    for (const [name, relativePath] of Object.entries(completed.outputs)) {
      const target = artifactPrefix(task, name);
      await deletePrefix(deps.s3, target);
      const stats = await uploadDir(deps.s3, inside(join(work, 'out'), relativePath), target);
      Context.current().log.info(`stage ${task.stage}: uploaded ${name} (${stats.files} files, ${stats.bytes} bytes) to ${target}`);
      outputs[name] = target;
    }
    return { stage: task.stage, outputs, metrics: completed.metrics };
  }

  /** The task's stage-cache key, and with `lookup` the result of an identical completed stage. */
  async function stageCache(task: StageTask, lookup: boolean): Promise<{ hit?: StageResult }> {
    if (!lookup) return {};
    try {
      const key = cacheKey(task, await inputObjects(deps.s3, task.inputs), await deps.trainerVersion());
      return { hit: await lookupStage(deps.s3, task, key, (m) => Context.current().log.warn(m)) };
    } catch (err) {
      throw refused(err, task.bucket);
    }
  }

  return { runStage, stageCache };
}

const RETRY_AFTER_PROGRESS = '200 milliseconds';

/** The attempt's cost, from the trainer's metrics (`processes`, `on_gpu`, `train_tokens`) and its wall time. */
export function usageOf(metrics: Record<string, number>, wallSeconds: number): StageUsage {
  const processes = metrics.processes ?? 1;
  return { device: metrics.on_gpu ? 'GPU' : 'CPU', processes, wallSeconds, deviceHours: (wallSeconds * processes) / 3600, tokens: metrics.train_tokens ?? 0 };
}

/**
 * Why the trainer was stopped, as the activity's outcome. A cancel (of the run, or a pause) stays
 * a cancel. A worker shutting down (SIGTERM: a deploy, a drained node) cancels its activities
 * with WORKER_SHUTDOWN: that is no reason to stop the run, so the attempt fails retryably, and
 * at once, so that another worker resumes from the checkpoint just committed instead of waiting
 * out the heartbeat timeout.
 */
function stopped(task: StageTask, reason: unknown): unknown {
  if (!(reason instanceof CancelledFailure && reason.message === 'WORKER_SHUTDOWN')) return reason;
  return ApplicationFailure.create({
    message: `stage ${task.stage}: its worker shut down; the trainer was stopped after committing a final checkpoint, and another worker resumes from it`,
    type: 'WorkerShutdown',
    nextRetryDelay: RETRY_AFTER_PROGRESS,
  });
}

/** S3 refused the worker's credentials: no retry can help, so the stage fails for good, naming the bucket, never a credential. */
export function refused(err: unknown, bucket: string): unknown {
  if (!isRefusal(err)) return err;
  return ApplicationFailure.nonRetryable(`S3 refused this worker's credentials for bucket ${bucket} (${err.name}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY where it runs`, 'S3AccessRefused');
}

// Temporal keeps a retried activity's last failure (shown in the UI and by `describe`) only while
// it stays under 4 KiB; a larger one becomes "Failure exceeds size limit.". The trainer's message
// and the end of its stderr are cut to fit (bytes, since Chinese text takes three a character),
// and the failure goes without its JS stack, which would repeat the whole message; the whole
// stderr is in the worker's debug log.
const FAILURE_MESSAGE_BYTES = 1024;
const FAILURE_STDERR_BYTES = 2048;

/** `text` cut to at most `maxBytes` of UTF-8, keeping its start or its end. */
export function clip(text: string, maxBytes: number, keep: 'start' | 'end'): string {
  if (Buffer.byteLength(text) <= maxBytes) return text;
  let chars = maxBytes - 3;
  const cut = () => (keep === 'end' ? `…${text.slice(-chars)}` : `${text.slice(0, chars)}…`);
  while (Buffer.byteLength(cut()) > maxBytes) chars = Math.floor(chars * 0.9);
  return cut();
}

function withoutStack(failure: ApplicationFailure): ApplicationFailure {
  failure.stack = '';
  return failure;
}

const stalledFor = (stall: Stall) =>
  `the trainer has reported nothing for ${stall.seconds} s since step ${stall.step}/${stall.totalSteps} (runtime.stall_timeout_seconds) and is taken for hung`;

/** Turns how the trainer ended into the stage's completion, or a failure of the right kind. */
function outcome(task: StageTask, exit: Awaited<ReturnType<typeof launchTrainer>>, committedCheckpoint: boolean, named: (text: string) => string, stall?: Stall) {
  const completed = exit.events.find((e) => e.event === 'completed');
  const failed = exit.events.find((e) => e.event === 'failed');
  const reason = (fallback: string) => clip(named(failed?.message ?? fallback), FAILURE_MESSAGE_BYTES, 'start');
  const stderrTail = clip(named(exit.stderrTail), FAILURE_STDERR_BYTES, 'end');
  const ended = `trainer ${task.stage} exited with ${exit.code ?? exit.signal}`;
  if (exit.protocolErrors.length) {
    throw withoutStack(ApplicationFailure.nonRetryable(
      clip(`${ended}; it broke the event contract on stdout: ${exit.protocolErrors.slice(0, 3).join(' | ')}`, FAILURE_MESSAGE_BYTES, 'start'),
      'ContractViolation',
    ));
  }
  // Under DeepSpeed the launcher exits with the code of the first rank it sees fail, which may be
  // one that stopped because rank 0 refused its input: rank 0's own event says what happened.
  if (exit.code === EXIT_INVALID_INPUT || failed?.kind === 'invalid_input') {
    throw withoutStack(ApplicationFailure.nonRetryable(`${ended}: ${reason('invalid input')}\n${stderrTail}`, 'InvalidInput'));
  }
  // One that stopped for good as it was taken for hung completed all the same.
  if (stall && !(exit.code === 0 && completed)) {
    throw withoutStack(ApplicationFailure.create({
      message: `stage ${task.stage}: ${stalledFor(stall)}; it was stopped (${ended}), and the retry resumes from the last committed checkpoint\n--- stderr tail ---\n${stderrTail}`,
      type: 'TrainerStalled',
      ...(committedCheckpoint && { nextRetryDelay: RETRY_AFTER_PROGRESS }),
    }));
  }
  if (exit.code !== 0 || !completed) {
    throw withoutStack(ApplicationFailure.create({
      message: `${ended}: ${reason('no completed event')}\n--- stderr tail ---\n${stderrTail}`,
      type: 'TrainerFailed',
      // An attempt that committed a checkpoint was no crash loop: the next one resumes at once,
      // instead of after the retry policy's backoff, which doubles with every attempt.
      ...(committedCheckpoint && { nextRetryDelay: RETRY_AFTER_PROGRESS }),
    }));
  }
  return completed;
}

/** Keeps the latest progress and forwards it to the workflow at most every `progress_report_seconds`. */
function progressReporter(task: StageTask, temporal?: Client) {
  const ctx = Context.current();
  let latest: StageProgress | undefined;
  let checkpoint: number | undefined;
  let sentAt = 0;
  let pending: StageProgress | undefined;
  // Reports go out one at a time, in order: the workflow must never see an older checkpoint last.
  let sending: Promise<void> = Promise.resolve();

  function send(progress: StageProgress) {
    sentAt = Date.now();
    pending = undefined;
    const loss = progress.loss === undefined ? '' : ` loss ${progress.loss.toFixed(4)}`;
    ctx.log.info(`[${progress.stage}] step ${progress.step}/${progress.totalSteps}${loss}`);
    const execution = ctx.info.workflowExecution;
    if (!temporal || !execution) return;
    sending = sending.then(() =>
      temporal.workflow
        .getHandle(execution.workflowId, execution.runId)
        .signal(progressSignal, progress)
        .catch((err: Error) => ctx.log.warn(`could not report progress to the workflow: ${err.message}`)),
    );
  }

  function update(progress: StageProgress, now = false) {
    latest = { ...progress, ...(checkpoint !== undefined && { checkpoint }) };
    ctx.heartbeat(latest);
    if (now || Date.now() - sentAt >= task.runtime.progress_report_seconds * 1000) send(latest);
    else pending = latest;
  }

  return {
    latest: () => latest,
    update,
    /** A committed checkpoint is reported at once: it is what tells the workflow that the stage got further. */
    checkpoint(step: number) {
      checkpoint = step;
      if (latest) update(latest, true);
    },
    async flush() {
      if (pending) send(pending);
      await sending;
    },
  };
}
