// What every benchmark gets: the parsed demo config, where to work, and the local services
// (a throwaway Temporal dev server and MinIO, started on first use, the same helpers as the tests').
import { fileURLToPath } from 'node:url';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { bundleWorkflowCode, DefaultLogger, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import type { RunConfig } from '../common/config.js';
import { startMinio, type TestMinio } from '../tests/helpers/minio.js';
import { startTemporal, workflowsPath } from '../tests/helpers/temporal.js';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const BENCH_DIR = fileURLToPath(new URL('.', import.meta.url));

/** Raw measurements: ours and (except for a plain ratio) the peer's, one value per repetition. */
export interface Measured {
  ours: number[];
  peer?: number[] | null;
  notes?: Record<string, unknown>;
}

export interface BenchContext {
  quick: boolean;
  repeats: number;
  cores: number;
  work: string;
  python: string;
  sharedData: string;
  config: RunConfig;
  services: Services;
}

export interface Benchmark {
  id: string;
  name: string;
  what: string;
  /** time and memory: lower is better; throughput and ratio: higher is better. */
  metric: 'time' | 'memory' | 'throughput' | 'ratio';
  unit: string;
  target: { max?: number; min?: number };
  run(ctx: BenchContext): Promise<Measured>;
}

export class Services {
  private minioServer?: Promise<TestMinio>;
  private temporalServer?: Promise<TestWorkflowEnvironment>;
  private bundle?: Promise<WorkflowBundleWithSourceMap>;

  constructor(readonly work: string) {}

  minio(): Promise<TestMinio> {
    this.minioServer ??= startMinio();
    return this.minioServer;
  }

  temporal(): Promise<TestWorkflowEnvironment> {
    this.temporalServer ??= startTemporal();
    return this.temporalServer;
  }

  /** The pipeline workflow's code, bundled once for every worker the benchmarks start. */
  workflowBundle(): Promise<WorkflowBundleWithSourceMap> {
    this.bundle ??= bundleWorkflowCode({ workflowsPath, logger: new DefaultLogger('ERROR') });
    return this.bundle;
  }

  async stop(): Promise<void> {
    await (await this.temporalServer)?.teardown();
    await (await this.minioServer)?.stop();
  }
}

/** The middle value (the upper one of an even count): what every benchmark reports. */
export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
