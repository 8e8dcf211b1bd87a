// Where the code that runs a stage came from, for the report's lineage.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);
const ROOT = new URL('..', import.meta.url).pathname;

/**
 * The commit of this checkout (with "+modified" when files differ from it), or LAWGPT_GIT_COMMIT
 * where the code runs without its .git (an image); "unknown" when neither says.
 */
export async function gitCommit(env: NodeJS.ProcessEnv = process.env): Promise<string> {
  if (env.LAWGPT_GIT_COMMIT) return env.LAWGPT_GIT_COMMIT;
  try {
    const head = (await run('git', ['-C', ROOT, 'rev-parse', 'HEAD'])).stdout.trim();
    const changed = (await run('git', ['-C', ROOT, 'status', '--porcelain', '--untracked-files=no'])).stdout.trim();
    return changed ? `${head}+modified` : head;
  } catch {
    return 'unknown';
  }
}
