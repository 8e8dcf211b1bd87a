// `npm run contract`: regenerates trainer-py's copy of the contract (tests fail when it is stale).
import { writeFileSync } from 'node:fs';
import { contractJsonSchema } from './contract.js';

export const CONTRACT_SCHEMA_PATH = new URL('../trainer-py/lawgpt_trainer/contract.schema.json', import.meta.url);

export function renderContractSchema(): string {
  return `${JSON.stringify(contractJsonSchema(), null, 2)}\n`;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  writeFileSync(CONTRACT_SCHEMA_PATH, renderContractSchema());
  console.log(`wrote ${CONTRACT_SCHEMA_PATH.pathname}`);
}
