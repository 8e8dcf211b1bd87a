// The bodies S3 servers send when objects change, reduced to what a trigger needs. Understood:
//   MinIO's webhook body     {EventName, Key, Records[]}   eventName "s3:ObjectCreated:Put"
//   an AWS S3 notification   {Records[]}                   eventName "ObjectCreated:Put"
//   the same wrapped by SNS  {Type: "Notification", Message: "<the S3 notification as JSON>"}
//   S3's test event          {Event: "s3:TestEvent", ...}, direct or wrapped
//   SNS's SubscriptionConfirmation, which someone must confirm (see the README)
// Keys arrive query-escaped ("+" for a space, %2F, percent-encoded UTF-8) and are decoded here.
import { z } from 'zod';
import { describeIssues } from '../common/config.js';

/** One object created or removed, its key decoded. */
export interface ObjectEvent {
  created: boolean;
  bucket: string;
  key: string;
  size: number;
  etag: string;
  /** Orders events of one key; with key and ETag, it identifies a delivery's event. */
  sequencer: string;
}

export type ParsedBody =
  | { kind: 'objects'; events: ObjectEvent[] }
  | { kind: 'test' }
  | { kind: 'sns-confirmation'; topic: string; subscribeUrl: string };

/** A body the webhook cannot use: answered 400 with this message. */
export class BadEventBody extends Error {}

const S3Record = z.object({
  eventName: z.string().min(1),
  s3: z.object({
    bucket: z.object({ name: z.string().min(1) }),
    object: z.object({
      key: z.string().min(1),
      size: z.number().nonnegative().optional(),
      eTag: z.string().optional(),
      sequencer: z.string().optional(),
    }),
  }),
});
const S3Notification = z.object({ Records: z.array(S3Record) });
const TestEvent = z.object({ Event: z.literal('s3:TestEvent') });
const SnsNotification = z.object({ Type: z.literal('Notification'), Message: z.string() });
const SnsConfirmation = z.object({ Type: z.literal('SubscriptionConfirmation'), TopicArn: z.string(), SubscribeURL: z.string().url() });

/** "a+b%2Fc%E6%B3%95" -> "a b/c法": S3 event keys are form-encoded. */
export function decodeKey(key: string): string {
  try {
    return decodeURIComponent(key.replace(/\+/g, ' '));
  } catch {
    throw new BadEventBody(`object key ${JSON.stringify(key)} is not valid percent-encoding`);
  }
}

function objectEvent(record: z.infer<typeof S3Record>): ObjectEvent {
  const name = record.eventName.replace(/^s3:/, '');
  const { object } = record.s3;
  return {
    created: name.startsWith('ObjectCreated:'),
    bucket: record.s3.bucket.name,
    key: decodeKey(object.key),
    size: object.size ?? 0,
    etag: (object.eTag ?? '').replace(/"/g, ''),
    sequencer: object.sequencer ?? '',
  };
}

function s3Body(body: unknown): ParsedBody | undefined {
  if (TestEvent.safeParse(body).success) return { kind: 'test' };
  const notification = S3Notification.safeParse(body);
  if (notification.success) return { kind: 'objects', events: notification.data.Records.map(objectEvent) };
  if (body && typeof body === 'object' && 'Records' in body) {
    throw new BadEventBody(`not an S3 event notification: ${describeIssues(notification.error).join('; ')}`);
  }
  return undefined;
}

/** What a request body says, or BadEventBody naming why it cannot be used. */
export function parseEventBody(body: unknown): ParsedBody {
  const direct = s3Body(body);
  if (direct) return direct;
  const confirmation = SnsConfirmation.safeParse(body);
  if (confirmation.success) return { kind: 'sns-confirmation', topic: confirmation.data.TopicArn, subscribeUrl: confirmation.data.SubscribeURL };
  const sns = SnsNotification.safeParse(body);
  if (sns.success) {
    let message: unknown;
    try {
      message = JSON.parse(sns.data.Message);
    } catch {
      throw new BadEventBody('SNS Message is not JSON');
    }
    const wrapped = s3Body(message);
    if (wrapped) return wrapped;
    throw new BadEventBody('SNS Message is not an S3 event notification');
  }
  throw new BadEventBody('unknown body: expected an S3 event notification ({Records: [...]}), MinIO\'s webhook body, or an SNS message wrapping one');
}
