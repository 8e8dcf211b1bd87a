// Where the code that runs a stage came from, for the run report's lineage.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));

/**
 * LAWGPT_GIT_COMMIT where the code runs without its .git (an image); otherwise this checkout's
 * commit, with "+modified" when tracked files differ from it; "unknown" when neither says.
 */
export async function gitCommit(configured?: string): Promise<string> {
  if (configured) return configured;
  try {
    const head = (await run('git', ['-C', ROOT, 'rev-parse', 'HEAD'])).stdout.trim();
    const changed = (await run('git', ['-C', ROOT, 'status', '--porcelain', '--untracked-files=no'])).stdout.trim();
    return changed ? `${head}+modified` : head;
  } catch {
    return 'unknown';
  }
}
