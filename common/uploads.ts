// What the webhook tells the corpus-upload workflow. Types only (plus constants), so that workflow
// code can import it freely.
import type { RunConfig } from './config.js';

export const UPLOAD_SIGNAL = 'objectUploaded';
export const CORPUS_UPLOAD_WORKFLOW = 'corpusUpload';

/** One object created under a watched corpus folder. */
export interface UploadedObject {
  /** A hash of bucket, key, ETag and sequencer: the same event delivered again has the same id. */
  id: string;
  key: string;
  /** The `_READY` marker: the upload is complete, no need to wait for the quiet period. */
  ready: boolean;
}

/** Input of the corpus-upload workflow: one watched corpus folder, and the run it starts. */
export interface UploadWatch {
  trigger: string;
  /** The run's data.corpus: the watched folder. */
  corpus: string;
  quietSeconds: number;
  /** The trigger's run config, its data.corpus already set to `corpus`. */
  config: RunConfig;
}
