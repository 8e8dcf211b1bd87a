// The local stack script and the code agree on the names they share.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { SEARCH_ATTRIBUTES } from '../common/run.js';

const lib = readFileSync(new URL('../infra/lib.sh', import.meta.url), 'utf8');

describe('infra/lib.sh', () => {
  it('registers every search attribute the workflows and clients use, as Keyword', () => {
    const registered = /^SEARCH_ATTRIBUTES=\((.*)\)$/m.exec(lib)![1].split(' ');
    expect(registered.sort()).toEqual(Object.values(SEARCH_ATTRIBUTES).map((name) => `${name}=Keyword`).sort());
  });
});
