// The event bodies the webhook understands, and which uploads fall under which trigger.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BadEventBody, decodeKey, parseEventBody } from '../webhook/events.js';
import { loadTriggers, matchUpload, TriggersError, whyNoTrigger } from '../webhook/triggers.js';

const record = (eventName: string, key: string, bucket = 'lawgpt') => ({
  eventVersion: '2.0',
  eventSource: 'minio:s3',
  eventName,
  s3: { bucket: { name: bucket }, object: { key, size: 12, eTag: '"0a1b"', sequencer: '17F2' } },
});

// What MinIO sends for `mc cp "民法 典.md" local/lawgpt/uploads/corpus/v1/`: the key form-encoded.
const minioBody = {
  EventName: 's3:ObjectCreated:Put',
  Key: 'lawgpt/uploads/corpus/v1/民法 典.md',
  Records: [record('s3:ObjectCreated:Put', 'uploads%2Fcorpus%2Fv1%2F%E6%B0%91%E6%B3%95+%E5%85%B8.md')],
};

describe('parseEventBody', () => {
  it("reads MinIO's body, decoding the key: + for a space, %2F, percent-encoded UTF-8", () => {
    expect(parseEventBody(minioBody)).toEqual({
      kind: 'objects',
      events: [{ created: true, bucket: 'lawgpt', key: 'uploads/corpus/v1/民法 典.md', size: 12, etag: '0a1b', sequencer: '17F2' }],
    });
  });

  it('reads an AWS S3 notification, directly and wrapped by SNS', () => {
    const aws = { Records: [record('ObjectCreated:CompleteMultipartUpload', 'uploads/corpus/v1/a+b.txt'), record('ObjectRemoved:Delete', 'x.md')] };
    const direct = parseEventBody(aws);
    expect(direct).toMatchObject({ kind: 'objects', events: [{ created: true, key: 'uploads/corpus/v1/a b.txt' }, { created: false, key: 'x.md' }] });
    expect(parseEventBody({ Type: 'Notification', TopicArn: 'arn:aws:sns:x', Message: JSON.stringify(aws) })).toEqual(direct);
  });

  it("recognises S3's test event and SNS's subscription confirmation", () => {
    const test = { Service: 'Amazon S3', Event: 's3:TestEvent', Time: '2026-11-27T00:00:00Z', Bucket: 'lawgpt' };
    expect(parseEventBody(test)).toEqual({ kind: 'test' });
    expect(parseEventBody({ Type: 'Notification', Message: JSON.stringify(test) })).toEqual({ kind: 'test' });
    const confirm = { Type: 'SubscriptionConfirmation', TopicArn: 'arn:aws:sns:t', SubscribeURL: 'https://sns.example/confirm?Token=1' };
    expect(parseEventBody(confirm)).toEqual({ kind: 'sns-confirmation', topic: 'arn:aws:sns:t', subscribeUrl: 'https://sns.example/confirm?Token=1' });
  });

  it('refuses other shapes with the reason', () => {
    expect(() => parseEventBody({ hello: 1 })).toThrow(BadEventBody);
    expect(() => parseEventBody({ Records: [{ eventName: 'x' }] })).toThrow(/not an S3 event notification: Records\.0\.s3/);
    expect(() => parseEventBody({ Type: 'Notification', Message: '{oops' })).toThrow('SNS Message is not JSON');
    expect(() => decodeKey('%E6%B3')).toThrow(/not valid percent-encoding/);
  });
});

describe('triggers', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lawgpt-triggers-'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  async function triggersFile(triggers: unknown[]) {
    const path = join(dir, 'triggers.json');
    await writeFile(path, JSON.stringify({ triggers }));
    return path;
  }
  const base = { name: 'corpus', bucket: 'lawgpt', prefix: 'uploads/corpus/', config: 'configs/demo.json' };

  it('loads the shipped triggers, each with its run config', () => {
    const [demo] = loadTriggers('configs/triggers.json');
    expect(demo.runConfig.name).toBe('demo');
    expect(demo.quiet_seconds).toBeGreaterThan(0);
  });

  it('names every wrong field, including those of a trigger\'s run config', async () => {
    const path = await triggersFile([{ ...base, prefix: '/abs', quiet_seconds: 0, extra: 1 }]);
    const error = (() => {
      try {
        loadTriggers(path);
      } catch (err) {
        return err as TriggersError;
      }
    })();
    expect(error).toBeInstanceOf(TriggersError);
    expect(error!.problems).toEqual([
      expect.stringMatching(/triggers\.0\.prefix/),
      expect.stringMatching(/triggers\.0\.quiet_seconds/),
      expect.stringMatching(/triggers\.0.*extra/),
    ]);
    const badConfig = join(dir, 'bad-run.json');
    await writeFile(badConfig, JSON.stringify({ name: 'x', bucket: 'lawgpt', pretrain: { max_steps: -1 } }));
    await triggersFile([{ ...base, config: badConfig }]);
    expect(() => loadTriggers(path)).toThrow(/triggers\.0\.config .*pretrain\.max_steps/s);
  });

  it('matches created objects under the prefix with a watched suffix; a versioned trigger takes the first folder', async () => {
    const [plain, versioned] = loadTriggers(
      await triggersFile([
        { ...base, suffixes: ['.md'] },
        { ...base, name: 'versions', prefix: 'uploads/versions/', versioned_folders: true },
      ]),
    );
    const event = (key: string, created = true) => ({ created, bucket: 'lawgpt', key, size: 1, etag: 'e', sequencer: 's' });
    expect(matchUpload([plain, versioned], event('uploads/corpus/刑法 第一编.md'))).toMatchObject({ trigger: plain, corpus: 's3://lawgpt/uploads/corpus/', ready: false });
    expect(matchUpload([plain], event('uploads/corpus/notes.pdf'))).toBeUndefined();
    expect(matchUpload([plain], event('uploads/corpus/判决.MD'))).toMatchObject({ trigger: plain });
    expect(matchUpload([plain], event('uploads/corpus/_READY'))).toMatchObject({ ready: true });
    expect(matchUpload([plain], event('uploads/corpus/a.md', false))).toBeUndefined();
    expect(matchUpload([plain], event('elsewhere/a.md'))).toBeUndefined();
    expect(matchUpload([versioned], event('uploads/versions/2026-11-27/民法/a.md'))).toMatchObject({ corpus: 's3://lawgpt/uploads/versions/2026-11-27/' });
    expect(matchUpload([versioned], event('uploads/versions/loose.md'))).toBeUndefined();
    // What the webhook logs for an object it ignores: why, trigger by trigger.
    expect(whyNoTrigger([plain, versioned], event('uploads/corpus/notes.pdf'))).toBe(`does not end in one of trigger ${plain.name}'s suffixes (.md)`);
    expect(whyNoTrigger([plain, versioned], event('uploads/versions/loose.md'))).toBe("is directly under trigger versions's prefix, in no version folder");
    expect(whyNoTrigger([plain, versioned], event('elsewhere/a.md'))).toBe('is under no trigger');
  });
});
