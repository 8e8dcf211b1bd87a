// Signals, queries, updates and search attributes of the workflows, shared by the workflows, their
// activities and clients.
import { defineSearchAttributeKey, SearchAttributeType, type SearchAttributePair } from '@temporalio/common';
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { RunConfig } from '../common/config.js';
import { APPROVE_UPDATE, givenModel, PAUSE_UPDATE, PROGRESS_SIGNAL, RESUME_UPDATE, SEARCH_ATTRIBUTES, STATUS_QUERY, type PipelineStatus, type RunTrigger, type StageProgress } from '../common/run.js';
import { UPLOAD_SIGNAL, type UploadedObject } from '../common/uploads.js';

export const progressSignal = defineSignal<[StageProgress]>(PROGRESS_SIGNAL);
export const statusQuery = defineQuery<PipelineStatus>(STATUS_QUERY);
export const pauseUpdate = defineUpdate<PipelineStatus>(PAUSE_UPDATE);
export const resumeUpdate = defineUpdate<PipelineStatus>(RESUME_UPDATE);
export const approveUpdate = defineUpdate<PipelineStatus>(APPROVE_UPDATE);
export const uploadSignal = defineSignal<[UploadedObject]>(UPLOAD_SIGNAL);

const keyword = (name: string) => defineSearchAttributeKey(name, SearchAttributeType.KEYWORD);
export const STAGE_KEY = keyword(SEARCH_ATTRIBUTES.stage);
export const RUN_NAME_KEY = keyword(SEARCH_ATTRIBUTES.runName);
export const CORPUS_KEY = keyword(SEARCH_ATTRIBUTES.corpus);
export const BASE_MODEL_KEY = keyword(SEARCH_ATTRIBUTES.baseModel);
export const TRIGGER_KEY = keyword(SEARCH_ATTRIBUTES.trigger);
export const SEARCH_ATTRIBUTE_KEYS = [STAGE_KEY, RUN_NAME_KEY, CORPUS_KEY, BASE_MODEL_KEY, TRIGGER_KEY];

/** The model a run starts from: the artifact it was given, else the base stage's shape. */
export function baseModelOf(config: RunConfig): string {
  const { tokenizer, hidden_size, num_hidden_layers } = config.base;
  return givenModel(config) ?? `llama-h${hidden_size}-l${num_hidden_layers} (${tokenizer})`;
}

/** The run's fixed summary and details in the Temporal UI (user metadata), set when it starts. */
export function runMetadata(config: RunConfig, trigger: RunTrigger): { staticSummary: string; staticDetails: string } {
  const corpus = config.data.corpus ?? '(no corpus)';
  return {
    staticSummary: `${config.name}: ${config.stages.join(' → ')} on ${corpus}`,
    staticDetails: [
      `**Run config** \`${config.name}\`, started by ${trigger}`,
      `**Stages** ${config.stages.join(' → ')}`,
      `**Corpus** ${corpus}`,
      `**Base model** ${baseModelOf(config)}`,
      ...(config.runtime.approve_before ? [`**Waits for approval before** ${config.runtime.approve_before}`] : []),
    ].join('\n\n'),
  };
}

/** What a new run shows in the Temporal UI from its start. */
export function runSearchAttributes(config: RunConfig, trigger: RunTrigger): SearchAttributePair[] {
  return [
    { key: STAGE_KEY, value: 'pending' },
    { key: RUN_NAME_KEY, value: config.name },
    { key: CORPUS_KEY, value: config.data.corpus ?? '' },
    { key: BASE_MODEL_KEY, value: baseModelOf(config) },
    { key: TRIGGER_KEY, value: trigger },
  ];
}
