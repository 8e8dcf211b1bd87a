// Finding, watching and killing processes, for tests that kill things.
import type { ChildProcess } from 'node:child_process';
import { readdir, readFile, readlink } from 'node:fs/promises';

/** SIGKILL, as a crash would, and wait until the process is gone. */
export async function halt(child: ChildProcess): Promise<void> {
  child.kill('SIGKILL');
  if (child.exitCode === null && child.signalCode === null) await new Promise((r) => child.once('exit', r));
}

/** PIDs of running (not zombie) processes whose command line contains every one of `parts`. */
export async function findProcesses(...parts: string[]): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = (await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '')).replaceAll('\0', ' ');
    if (!parts.every((p) => cmdline.includes(p))) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    if (stat && stat.split(') ')[1]?.[0] !== 'Z') found.push(Number(entry));
  }
  return found;
}

/** What holds files under `dir` open, or has it as working folder: "pid command: path" each. */
export async function holdersOf(dir: string): Promise<string[]> {
  const held: string[] = [];
  for (const pid of (await readdir('/proc')).filter((entry) => /^\d+$/.test(entry))) {
    const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
    const paths = await Promise.all([`/proc/${pid}/cwd`, ...fds.map((fd) => `/proc/${pid}/fd/${fd}`)].map((link) => readlink(link).catch(() => '')));
    const command = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).replaceAll('\0', ' ').slice(0, 120);
    for (const path of paths.filter((p) => p.startsWith(`${dir}/`) || p === dir)) held.push(`${pid} ${command}: ${path}`);
  }
  return held;
}

/** Polls `check` until it returns a value that is not undefined, or fails after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 120_000, pollMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}
