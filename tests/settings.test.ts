// How the worker, the CLIs and the webhook reach Temporal: plain locally, TLS with a client
// certificate or an API key against a secured cluster. (No secured server runs here: the options
// are checked, the handshake is not; see the README.)
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadSettings, temporalConnection } from '../common/settings.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'lawgpt-tls-'));
  for (const name of ['client.pem', 'client.key', 'ca.pem']) await writeFile(join(dir, name), `-----BEGIN ${name}-----`);
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe('temporalConnection', () => {
  it('is plain without TLS settings', () => {
    expect(temporalConnection(loadSettings({ TEMPORAL_ADDRESS: '127.0.0.1:7233' }), undefined)).toEqual({ address: '127.0.0.1:7233' });
  });

  it('uses mTLS with the certificate, key and CA files the environment names', () => {
    const settings = loadSettings({ TEMPORAL_ADDRESS: 'temporal.internal:7233', TEMPORAL_TLS_CERT: join(dir, 'client.pem'), TEMPORAL_TLS_KEY: join(dir, 'client.key'), TEMPORAL_TLS_CA: join(dir, 'ca.pem'), TEMPORAL_TLS_SERVER_NAME: 'temporal' });
    const options = temporalConnection(settings, undefined);
    expect(options.tls).toEqual({
      clientCertPair: { crt: Buffer.from('-----BEGIN client.pem-----'), key: Buffer.from('-----BEGIN client.key-----') },
      serverRootCACertificate: Buffer.from('-----BEGIN ca.pem-----'),
      serverNameOverride: 'temporal',
    });
    expect(options.apiKey).toBeUndefined();
  });

  it('uses TLS with an API key (Temporal Cloud), which stays out of the settings', () => {
    const env = { TEMPORAL_ADDRESS: 'ns.acct.tmprl.cloud:7233', TEMPORAL_API_KEY: 'secret-key' };
    const settings = loadSettings(env);
    expect(JSON.stringify(settings)).not.toContain('secret-key');
    expect(temporalConnection(settings, env.TEMPORAL_API_KEY)).toEqual({ address: 'ns.acct.tmprl.cloud:7233', tls: {}, apiKey: 'secret-key' });
  });

  it('refuses a certificate without its key', () => {
    expect(() => temporalConnection(loadSettings({ TEMPORAL_TLS_CERT: join(dir, 'client.pem') }), undefined)).toThrow('TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY go together');
  });
});
