// The run report's pure parts: curves merged across attempts, why checkpoints are kept, and a page
// that stays whole whatever text the run carries. The report of a real run, opened in Chromium:
// tests/e2e.test.ts.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { retention } from '../activities/checkpoints.js';
import type { MetricsRecord, RunReport } from '../common/report.js';
import { parseRunConfig } from '../common/config.js';
import { mergeCurve } from '../report/collect.js';
import { chartNames, renderPage } from '../report/page.js';

const progress = (step: number, loss: number, time = 't'): MetricsRecord => ({ event: 'progress', time, step, total_steps: 6, loss });

describe('mergeCurve', () => {
  it('lets a retried attempt replace the steps it ran again, and puts held-out loss on its checkpoint step', () => {
    const first = [progress(1, 5), progress(2, 4), { event: 'checkpoint', time: 't', step: 2, eval_loss: 4.5 } as MetricsRecord, progress(3, 3.9, 'lost')];
    // The second attempt resumed from checkpoint-2 and ran step 3 again.
    const second = [progress(3, 3.5), progress(4, 3)];
    expect(mergeCurve([first, second]).map(({ step, loss, eval_loss }) => ({ step, loss, eval_loss }))).toEqual([
      { step: 1, loss: 5, eval_loss: undefined },
      { step: 2, loss: 4, eval_loss: 4.5 },
      { step: 3, loss: 3.5, eval_loss: undefined },
      { step: 4, loss: 3, eval_loss: undefined },
    ]);
  });

  it('leaves out progress without a loss (eval counts questions, not losses)', () => {
    expect(mergeCurve([[{ event: 'progress', time: 't', step: 3, total_steps: 9 }]])).toEqual([]);
  });
});

describe('retention', () => {
  const manifest = (step: number, eval_loss?: number) => ({ manifest: { step, eval_loss } });

  it('keeps the newest ones and the best held-out loss, and says which is which', () => {
    const kept = retention([manifest(10, 3.0), manifest(20, 2.5), manifest(30, 2.7), manifest(40, 2.8)], 2);
    expect(Object.fromEntries(kept)).toEqual({ 40: ['newest'], 30: ['newest'], 20: ['best'] });
  });

  it('marks a checkpoint that is both', () => {
    expect(Object.fromEntries(retention([manifest(10, 3.0), manifest(20, 2.5)], 1))).toEqual({ 20: ['newest', 'best'] });
  });

  it('keeps the newest alone where the stage does not evaluate', () => {
    expect(Object.fromEntries(retention([manifest(10), manifest(20), manifest(30)], 2))).toEqual({ 30: ['newest'], 20: ['newest'] });
  });
});

describe('renderPage', () => {
  const demo = JSON.parse(readFileSync(new URL('../configs/demo.json', import.meta.url), 'utf8'));
  const config = parseRunConfig(demo);
  const hostile = 'x</script><script>alert(1)</script>';
  const report: RunReport = {
    report_version: 1,
    run_id: 'run-1',
    run_name: hostile,
    error: hostile,
    generated_at: '2026-11-27T00:00:00.000Z',
    stages: [
      { stage: 'pretrain', state: 'completed', outputs: {}, metrics: {}, curve: [{ step: 1, loss: 2, time: 't' }], checkpoints: [] },
      { stage: 'eval', state: 'pending', outputs: {}, metrics: {}, curve: [], checkpoints: [] },
    ],
    bits_per_char: { final: 3 },
    usage: { gpu_hours: 0, cpu_hours: 0, tokens: 0 },
    lineage: { config_hash: 'h', config, stages: [], report_git_commit: 'c' },
  };

  it('draws a chart per curve and figure the run has, and none for what it lacks', () => {
    expect(chartNames(report)).toEqual(['loss-pretrain', 'bits-per-char', 'usage']);
  });

  it('keeps text from the run inert, in the HTML and in the embedded JSON', () => {
    const withComment = { ...report, error: `${hostile} <!-- then --> more` };
    const page = renderPage(withComment, '/* chart library */');
    // Escaped where it is HTML; inside the JSON it cannot end its element early: three scripts end.
    expect(page).toContain('<h1>Run report: x&#60;/script&#62;&#60;script&#62;alert(1)&#60;/script&#62; (run-1)</h1>');
    expect(page.match(/<\/script>/g)).toHaveLength(3);
    expect(page).not.toContain('<!--');
    const embedded = /<script type="application\/json" id="report-data">(.*?)<\/script>/s.exec(page)![1];
    expect(JSON.parse(embedded)).toEqual(withComment);
  });
});
