// The webhook's HTTP handler (webhook/server.ts runs it):
//   POST /s3-events  an S3, MinIO or SNS event body, with `Authorization: Bearer <token>`
//   GET  /healthz    200 while it serves
// A request is only checked, parsed and handed to Temporal (a signal-with-start of the folder's
// corpus-upload workflow), which takes milliseconds; the waiting and the run happen in Temporal.
// It answers 401 without the right token, 413 over 1 MiB, 400 for a body it cannot use (saying
// why), 503 while Temporal is unreachable (S3 servers retry), and starts nothing in any of these.
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Client } from '@temporalio/client';
import { parseRunConfig } from '../common/config.js';
import { CORPUS_UPLOAD_WORKFLOW, type UploadWatch } from '../common/uploads.js';
import { CORPUS_KEY, TRIGGER_KEY, uploadSignal } from '../workflows/definitions.js';
import { BadEventBody, parseEventBody, type ObjectEvent } from './events.js';
import { matchUpload, whyNoTrigger, type Trigger, type Upload } from './triggers.js';

export const MAX_BODY_BYTES = 1 << 20;

export interface WebhookOptions {
  temporal: Client;
  taskQueue: string;
  token: string;
  triggers: Trigger[];
  log?: (line: string) => void;
}

class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

const digest = (text: string) => createHash('sha256').update(text).digest();

/** The request's bearer token equals ours, compared in constant time (digests have one length). */
function authorized(request: IncomingMessage, token: string): boolean {
  const header = request.headers.authorization ?? '';
  return timingSafeEqual(digest(header), digest(`Bearer ${token}`));
}

async function readBody(request: IncomingMessage): Promise<string> {
  if (Number(request.headers['content-length'] ?? 0) > MAX_BODY_BYTES) throw new HttpError(413, `body over ${MAX_BODY_BYTES} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, `body over ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** The corpus-upload workflow of one watched folder: one per bucket and folder, whatever the event. */
export const watchWorkflowId = (upload: Upload) => `corpus-upload-${upload.trigger.name}-${createHash('sha256').update(upload.corpus).digest('hex').slice(0, 16)}`;

function watchOf(upload: Upload): UploadWatch {
  const { trigger, corpus } = upload;
  return {
    trigger: trigger.name,
    corpus,
    quietSeconds: trigger.quiet_seconds,
    config: parseRunConfig({ ...trigger.runConfig, data: { ...trigger.runConfig.data, corpus } }),
  };
}

/**
 * The event's identity (bucket, key, ETag and sequencer: a delivery of the same event again has
 * the same), hashed to 32 characters: the watcher remembers thousands, and a key may be hundreds of
 * bytes of Chinese.
 */
export const eventId = (event: ObjectEvent) => createHash('sha256').update(`${event.bucket}/${event.key}|${event.etag}|${event.sequencer}`).digest('hex').slice(0, 32);

export function createWebhook(options: WebhookOptions): Server {
  const log = options.log ?? ((line: string) => console.log(line));

  async function signal(event: ObjectEvent, upload: Upload) {
    await options.temporal.workflow.signalWithStart(CORPUS_UPLOAD_WORKFLOW, {
      workflowId: watchWorkflowId(upload),
      taskQueue: options.taskQueue,
      args: [watchOf(upload)],
      signal: uploadSignal,
      signalArgs: [{ id: eventId(event), key: event.key, ready: upload.ready }],
      typedSearchAttributes: [
        { key: CORPUS_KEY, value: upload.corpus },
        { key: TRIGGER_KEY, value: 'webhook' },
      ],
      staticSummary: `watching ${upload.corpus} for trigger ${upload.trigger.name}`,
    });
  }

  async function handleEvents(request: IncomingMessage): Promise<Record<string, unknown>> {
    if (!authorized(request, options.token)) throw new HttpError(401, 'missing or wrong bearer token');
    const text = await readBody(request);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch (err) {
      throw new HttpError(400, `malformed JSON: ${(err as Error).message}`);
    }
    let parsed;
    try {
      parsed = parseEventBody(body);
    } catch (err) {
      if (err instanceof BadEventBody) throw new HttpError(400, err.message);
      throw err;
    }
    if (parsed.kind === 'test') {
      log('ignored: s3:TestEvent');
      return { ignored: 1 };
    }
    if (parsed.kind === 'sns-confirmation') {
      log(`SNS subscription to ${parsed.topic} awaits confirmation: open its SubscribeURL once (${parsed.subscribeUrl}); the webhook makes no outbound calls`);
      return { ignored: 1 };
    }
    let signalled = 0;
    for (const event of parsed.events) {
      const upload = matchUpload(options.triggers, event);
      if (!upload) {
        log(`ignored: ${event.created ? 'created' : 'removed'} s3://${event.bucket}/${event.key}${event.created ? ` ${whyNoTrigger(options.triggers, event)}` : ''}`);
        continue;
      }
      try {
        await signal(event, upload);
      } catch (err) {
        throw new HttpError(503, `Temporal is unreachable (${(err as Error).message}); retry later`);
      }
      signalled++;
      log(`upload: s3://${event.bucket}/${event.key} -> ${watchWorkflowId(upload)} (trigger ${upload.trigger.name}${upload.ready ? ', ready' : ''})`);
    }
    return { signalled, ignored: parsed.events.length - signalled };
  }

  return createServer((request: IncomingMessage, response: ServerResponse) => {
    const started = Date.now();
    const reply = (status: number, body: Record<string, unknown>) => {
      response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      log(`${request.method} ${request.url} ${status} ${Date.now() - started} ms${status >= 400 ? `: ${body.error}` : ''}`);
    };
    const route = `${request.method} ${request.url?.split('?')[0]}`;
    if (route === 'GET /healthz') return reply(200, { status: 'ok' });
    // MinIO checks that its target is up with a HEAD before it delivers.
    if (route === 'HEAD /s3-events') return authorized(request, options.token) ? reply(200, {}) : reply(401, { error: 'missing or wrong bearer token' });
    if (route !== 'POST /s3-events') return reply(404, { error: 'not found: POST /s3-events or GET /healthz' });
    handleEvents(request).then(
      (body) => reply(200, body),
      (err: unknown) => {
        if (err instanceof HttpError) {
          // Without this the client would keep sending a body nobody reads.
          if (err.status === 413 || err.status === 401) response.setHeader('connection', 'close');
          return reply(err.status, { error: err.message });
        }
        reply(500, { error: 'internal error' });
        console.error(err);
      },
    );
  });
}
