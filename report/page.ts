// The run report as one self-contained HTML page: report.json embedded, Chart.js inlined (no CDN:
// the page opens offline, from S3 or a laptop), every chart drawn from the embedded JSON.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { RunReport } from '../common/report.js';

/** Chart.js's UMD build, with its licence header. */
function chartLibrary(): string {
  const main = createRequire(import.meta.url).resolve('chart.js');
  return readFileSync(join(dirname(main), 'chart.umd.min.js'), 'utf8');
}

const escapeHtml = (text: string) => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
// In JSON, "<" only occurs inside strings, where \u003c means the same: no "</script>" or
// "<!--" of the run's text can then end or confuse the element that carries it.
const jsonInScript = (value: unknown) => JSON.stringify(value).replace(/</g, '\\u003c');
/** Code for a <script> element, which must not contain its end tag. */
function scriptSafe(code: string): string {
  if (/<\/script/i.test(code)) throw new Error('script code contains </script');
  return code;
}

const fixed = (value: number | undefined, digits: number) => (value === undefined ? '—' : value.toFixed(digits));

function table(head: string[], rows: (string | number)[][]): string {
  const cells = (row: (string | number)[], tag: string) => row.map((c) => `<${tag}>${c}</${tag}>`).join('');
  return `<table><thead><tr>${cells(head, 'th')}</tr></thead><tbody>${rows.map((r) => `<tr>${cells(r, 'td')}</tr>`).join('')}</tbody></table>`;
}

function stagesTable(report: RunReport): string {
  return table(
    ['stage', 'state', 'device', 'processes', 'wall time', 'device-hours', 'tokens trained'],
    report.stages.map((s) => [
      s.stage,
      escapeHtml(s.cached_from ? `cached (from ${s.cached_from})` : s.state),
      s.usage?.device ?? '—',
      s.usage?.processes ?? '—',
      s.usage ? `${s.usage.wallSeconds.toFixed(1)} s` : '—',
      fixed(s.usage?.deviceHours, 4),
      s.usage?.tokens ?? '—',
    ]),
  );
}

function checkpointsSection(report: RunReport): string {
  const rows = report.stages.flatMap((s) =>
    s.checkpoints.map((c) => [s.stage, c.step, fixed(c.eval_loss, 4), c.kept_as.join(', ') || '—', `<code>${escapeHtml(c.uri)}</code>`]),
  );
  if (!rows.length) return '<p>No checkpoint is kept.</p>';
  return table(['stage', 'step', 'held-out loss', 'kept as', 'where'], rows);
}

function cacheSection(report: RunReport): string {
  const cached = report.stages.filter((s) => s.cached_from);
  const lines = cached.map((s) => `<li><b>${s.stage}</b>: stage cache hit, outputs made by run ${escapeHtml(s.cached_from!)}</li>`);
  const blocks = report.stages.find((s) => s.stage === 'pretrain' && !s.cached_from && s.metrics.blocks_from_cache !== undefined);
  if (blocks) lines.push(`<li><b>pretrain</b>: tokenized blocks ${blocks.metrics.blocks_from_cache ? 'from the block cache' : 'prepared afresh (block cache miss)'}</li>`);
  return `<p>${cached.length} of ${report.stages.length} stages came from the stage cache.</p><ul>${lines.join('')}</ul>`;
}

function examTable(report: RunReport): string {
  if (!report.exam) return '';
  const { accuracy_by_model: accuracy, answer_logprob: logprob } = report.exam;
  const models = (['base', 'pretrained', 'final'] as const).filter((m) => accuracy[m] !== undefined || logprob[m] !== undefined);
  return table(['model', 'exam accuracy', 'mean log-probability of the right answer'], models.map((m) => [m, fixed(accuracy[m], 3), fixed(logprob[m], 3)]));
}

function lineageSection(report: RunReport): string {
  const { lineage } = report;
  const stages = lineage.stages.map((stage) => {
    const inputs = stage.inputs.map((input) => {
      const bytes = input.objects.reduce((sum, o) => sum + o.size, 0);
      const objects = table(['object', 'bytes', 'ETag'], input.objects.map((o) => [`<code>${escapeHtml(o.key || '(the object itself)')}</code>`, o.size, `<code>${escapeHtml(o.etag)}</code>`]));
      return `<details><summary><b>${escapeHtml(input.name)}</b> <code>${escapeHtml(input.uri)}</code>: ${input.objects.length} objects, ${bytes} bytes</summary>${objects}</details>`;
    });
    const code = `trainer <code>${escapeHtml(stage.trainer_version)}</code>, git commit <code>${escapeHtml(stage.git_commit)}</code>`;
    return `<h3>${stage.stage}</h3><p>${code}</p>${inputs.join('\n')}`;
  });
  return [
    table(['', ''], [
      ['config hash', `<code>${lineage.config_hash}</code>`],
      ['report written by git commit', `<code>${escapeHtml(lineage.report_git_commit)}</code>`],
    ]),
    ...stages,
    '<details><summary>Config</summary><pre>' + escapeHtml(JSON.stringify(lineage.config, null, 2)) + '</pre></details>',
  ].join('\n');
}

function summary(report: RunReport): string {
  const parts = [
    `${report.usage.gpu_hours.toFixed(4)} GPU-hours`,
    `${report.usage.cpu_hours.toFixed(4)} CPU-hours`,
    `${report.usage.tokens} tokens trained`,
  ];
  if (report.vocabulary) parts.push(`${report.vocabulary.pieces_added} pieces added to the vocabulary (${report.vocabulary.base_vocab_size} → ${report.vocabulary.merged_vocab_size})`);
  if (report.exam) parts.push(`exam accuracy ${(report.exam.accuracy * 100).toFixed(1)}% against ${(report.exam.chance_accuracy * 100).toFixed(1)}% by chance, on ${report.exam.questions} held-out questions`);
  if (report.short_answer) parts.push(`short-answer questions: ROUGE-L ${report.short_answer.rouge_l.toFixed(3)} against the reference answers, on ${report.short_answer.questions} questions`);
  return `<ul>${parts.map((p) => `<li>${escapeHtml(p)}</li>`).join('')}</ul>`;
}

/** The names of the charts the page draws for this report, one canvas each (the test checks each one drew). */
export function chartNames(report: RunReport): string[] {
  const names = report.stages.filter((s) => s.curve.length).map((s) => `loss-${s.stage}`);
  if (report.vocabulary) names.push('vocabulary');
  if (Object.values(report.bits_per_char).some((v) => v !== undefined)) names.push('bits-per-char');
  if (report.exam) names.push('exam-by-subject', 'exam-by-model');
  names.push('usage');
  return names;
}

const CANVAS_TITLES: Record<string, string> = {
  vocabulary: 'Tokens per character of held-out text, before and after the vocabulary merge',
  'bits-per-char': 'Held-out bits per character (lower is better), per model',
  'exam-by-subject': 'Exam accuracy by subject (log-likelihood), against chance',
  'exam-by-model': 'Exam: mean log-probability of the right answer, per model (higher is better)',
  usage: 'Device-hours per stage',
};

function canvas(name: string): string {
  const title = name.startsWith('loss-') ? `${name.slice(5)}: training loss per step, held-out loss at each checkpoint` : CANVAS_TITLES[name];
  return `<figure><figcaption>${escapeHtml(title)}</figcaption><canvas class="chart" data-chart="${name}" width="720" height="300"></canvas></figure>`;
}

// Runs in the page: draws every canvas from the embedded report.json, then sets window.reportDrawn.
const DRAW = `
const report = JSON.parse(document.getElementById('report-data').textContent);
const options = (extra) => Object.assign({ animation: false, responsive: false }, extra);
const draw = {};
for (const s of report.stages) {
  draw['loss-' + s.stage] = (ctx) => new Chart(ctx, {
    type: 'line',
    data: { datasets: [
      { label: 'training loss', data: s.curve.filter((p) => p.loss !== undefined).map((p) => ({ x: p.step, y: p.loss })), pointRadius: 0, borderWidth: 2 },
      { label: 'held-out loss', data: s.curve.filter((p) => p.eval_loss !== undefined).map((p) => ({ x: p.step, y: p.eval_loss })), showLine: false, pointRadius: 5 },
    ] },
    options: options({ scales: { x: { type: 'linear', title: { display: true, text: 'step' } }, y: { title: { display: true, text: 'loss' } } } }),
  });
}
const bars = (labels, label, values, extra) => (ctx) => new Chart(ctx, { type: 'bar', data: { labels, datasets: [{ label, data: values }].concat(extra || []) }, options: options() });
if (report.vocabulary) draw.vocabulary = bars(['base', 'merged'], 'tokens per character', [report.vocabulary.tokens_per_char_base, report.vocabulary.tokens_per_char_merged]);
const models = ['base', 'pretrained', 'final'].filter((m) => report.bits_per_char[m] !== undefined);
draw['bits-per-char'] = bars(models, 'bits per character', models.map((m) => report.bits_per_char[m]));
if (report.exam) {
  const subjects = Object.keys(report.exam.accuracy_by_subject);
  draw['exam-by-subject'] = bars(subjects, 'accuracy', subjects.map((s) => report.exam.accuracy_by_subject[s]),
    [{ type: 'line', label: 'chance', data: subjects.map(() => report.exam.chance_accuracy), pointRadius: 0 }]);
  const scored = ['base', 'pretrained', 'final'].filter((m) => report.exam.answer_logprob[m] !== undefined);
  draw['exam-by-model'] = bars(scored, 'mean log-probability of the right answer', scored.map((m) => report.exam.answer_logprob[m]));
}
draw.usage = bars(report.stages.map((s) => s.stage), 'device-hours', report.stages.map((s) => s.usage ? s.usage.deviceHours : 0));
for (const canvas of document.querySelectorAll('canvas.chart')) draw[canvas.dataset.chart](canvas);
window.reportDrawn = true;
`;

export function renderPage(report: RunReport, library = chartLibrary()): string {
  const title = `Run report: ${report.run_name} (${report.run_id})`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${escapeHtml(title)}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 980px; color: #222; }
table { border-collapse: collapse; margin: .5rem 0 1rem; } td, th { border: 1px solid #ccc; padding: .2rem .5rem; text-align: left; }
figure { margin: 1rem 0; } figcaption { font-weight: 600; margin-bottom: .3rem; } code { font-size: 12px; }
.error { color: #a00; font-weight: 600; } pre { background: #f6f6f6; padding: .5rem; overflow-x: auto; }
</style>
</head>
<body>
<h1>${escapeHtml(title)}</h1>
<p>Generated ${escapeHtml(report.generated_at)}. Every number here is in <code>report.json</code> beside this page.</p>
${report.error ? `<p class="error">${escapeHtml(report.error)}</p>` : ''}
${summary(report)}
<h2>Stages</h2>
${stagesTable(report)}
<h2>Charts</h2>
${chartNames(report).map(canvas).join('\n')}
${examTable(report)}
<h2>Caches</h2>
${cacheSection(report)}
<h2>Checkpoints kept</h2>
${checkpointsSection(report)}
<h2>Lineage</h2>
${lineageSection(report)}
<script type="application/json" id="report-data">${jsonInScript(report)}</script>
<script>${scriptSafe(library)}</script>
<script>${DRAW}</script>
</body>
</html>
`;
}
