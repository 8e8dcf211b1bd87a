// One watched corpus folder (workflow id derived from bucket and folder, see webhook/handler.ts): the
// webhook signals-with-start it for every object uploaded there. It waits until no new object has
// arrived for the trigger's quiet period (or the `_READY` marker arrives), then starts ONE pipeline
// run on the folder, so that `mc cp --recursive` of a thousand files is one run.
//
// Event ids are remembered, so an event delivered again (MinIO retries until it gets a 2xx) is
// ignored, also after the run started. A NEW object after the run started starts a new run once it
// is quiet again: the folder changed, and a run on the old contents would hide that (the stage cache
// makes the unchanged stages free). The workflow ends after a day without events.
//
// A corpus uploaded a document a file is tens of thousands of signals, over what one execution's
// history may hold, so the watcher continues as new whenever Temporal suggests it, also while
// objects are still arriving, carrying the ids of the last REMEMBERED events (a redelivery of an
// older one counts as new: at worst a run the stage cache serves whole).
import { condition, continueAsNew, log, ParentClosePolicy, patched, startChild, setHandler, workflowInfo } from '@temporalio/workflow';
import { newRunId } from '../common/run.js';
import type { UploadedObject, UploadWatch } from '../common/uploads.js';
import { runMetadata, runSearchAttributes, uploadSignal } from './definitions.js';
import { lawgptPipeline } from './pipeline.js';

const IDLE_BEFORE_END = '24 hours';
// 32-character ids (webhook/handler.ts): about 0.7 MB of the 2 MB continue-as-new may carry.
const REMEMBERED = 20_000;

export interface UploadState {
  /** Ids of the events seen, the last REMEMBERED: redeliveries are recognised across runs. */
  seen: string[];
  /** New objects not yet in a run. */
  pending: number;
  ready: boolean;
}

export async function corpusUpload(watch: UploadWatch, carried: UploadState = { seen: [], pending: 0, ready: false }): Promise<void> {
  const seen = new Set(carried.seen);
  let { pending, ready } = carried;
  let arrived = 0;
  setHandler(uploadSignal, (object: UploadedObject) => {
    if (seen.has(object.id)) {
      log.info('ignored an event delivered again', { key: object.key });
      return;
    }
    seen.add(object.id);
    pending++;
    arrived++;
    ready ||= object.ready;
  });

  const carryOnIfSuggested = async () => {
    if (workflowInfo().continueAsNewSuggested) await continueAsNew<typeof corpusUpload>(watch, { seen: [...seen].slice(-REMEMBERED), pending, ready });
  };

  for (;;) {
    if (!(await condition(() => pending > 0, IDLE_BEFORE_END))) return;
    // Quiet period: restarts with every new object, ends early on the ready marker.
    for (let before = arrived; !ready; before = arrived) {
      if (patched('watcher-continues-while-quiet')) await carryOnIfSuggested();
      if (!(await condition(() => arrived !== before || ready, `${watch.quietSeconds} seconds`))) break;
    }
    const starting = pending;
    const workflowId = newRunId(watch.config.name, new Date(), watch.trigger);
    await startChild(lawgptPipeline, {
      workflowId,
      args: [watch.config],
      // The run outlives this watcher.
      parentClosePolicy: ParentClosePolicy.ABANDON,
      typedSearchAttributes: runSearchAttributes(watch.config, 'webhook'),
      ...runMetadata(watch.config, 'webhook'),
    });
    log.info('started a run on the uploaded corpus', { workflowId, corpus: watch.corpus, objects: starting });
    pending -= starting;
    ready = false;
    await carryOnIfSuggested();
  }
}
