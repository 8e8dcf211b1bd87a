// Signals, queries and search attributes of the pipeline workflow, shared by the workflow, its
// activities and clients.
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import { PAUSE_UPDATE, PROGRESS_SIGNAL, RESUME_UPDATE, STAGE_SEARCH_ATTRIBUTE, STATUS_QUERY, type PipelineStatus, type StageProgress } from '../common/run.js';

export const progressSignal = defineSignal<[StageProgress]>(PROGRESS_SIGNAL);
export const statusQuery = defineQuery<PipelineStatus>(STATUS_QUERY);
export const pauseUpdate = defineUpdate<PipelineStatus>(PAUSE_UPDATE);
export const resumeUpdate = defineUpdate<PipelineStatus>(RESUME_UPDATE);
export const STAGE_KEY = defineSearchAttributeKey(STAGE_SEARCH_ATTRIBUTE, SearchAttributeType.KEYWORD);
