// P2, checkpoint upload: a checkpoint-shaped folder (a few large shards and many small files, with
// its manifest) to MinIO through the CheckpointUploader the activity uses, against `mc cp
// --recursive` of the same folder. Throughput in MiB/s; the folder is 1 GiB (256 MiB with --quick).
// Both sides' client CPU seconds per GiB are noted: on a small machine the client competes with the
// MinIO server for the same cores, so CPU spent per byte is what decides throughput.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cp, mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { CheckpointUploader, sha256File } from '../activities/checkpoints.js';
import { deletePrefix, ensureBucket } from '../activities/s3.js';
import { MANIFEST_FILE, type CheckpointManifest } from '../common/contract.js';
import { tools } from '../tests/helpers/tools.js';
import { median, type BenchContext, type Measured } from './context.js';

const MiB = 2 ** 20;

/** Three large shards and 64 small files, `total` bytes in all, and the manifest the trainer would write. */
async function checkpointFolder(dir: string, total: number): Promise<number> {
  await rm(dir, { recursive: true, force: true });
  const small = Array.from({ length: 64 }, (_, i) => [`global_step/small-${i}.pt`, total / 16 / 64] as const);
  const large = Array.from({ length: 3 }, (_, i) => [`model-0000${i}-of-00003.safetensors`, ((total * 15) / 16) / 3] as const);
  const files: CheckpointManifest['files'][number][] = [];
  for (const [path, size] of [...large, ...small]) {
    await mkdir(dirname(join(dir, path)), { recursive: true });
    const chunks = [];
    for (let left = size; left > 0; left -= 8 * MiB) chunks.push(randomBytes(Math.min(8 * MiB, left)));
    await writeFile(join(dir, path), Buffer.concat(chunks));
    files.push({ path, size, sha256: await sha256File(join(dir, path)) });
  }
  const manifest: CheckpointManifest = {
    manifest_version: 1, run_id: 'bench', stage: 'pretrain', step: 1, world_size: 1, config_hash: '0'.repeat(64), vocab_size: 1, trainer_version: 'bench',
    files: files as CheckpointManifest['files'],
  }; // prettier-ignore
  await writeFile(join(dir, MANIFEST_FILE), JSON.stringify(manifest));
  return (await stat(join(dir, MANIFEST_FILE))).size + total;
}

export async function checkpointUpload(ctx: BenchContext): Promise<Measured> {
  const minio = await ctx.services.minio();
  await ensureBucket(minio.client, 'bench');
  const source = join(ctx.work, 'checkpoint');
  const bytes = await checkpointFolder(source, (ctx.quick ? 256 : 1024) * MiB);
  const mcConfig = join(ctx.work, 'mc-config');
  const mcEnv = {
    ...process.env,
    MC_HOST_bench: `http://${minio.credentials.accessKeyId}:${minio.credentials.secretAccessKey}@${new URL(minio.endpoint).host}`,
  };
  const ours: number[] = [];
  const peer: number[] = [];
  const cpu = { ours: [] as number[], peer: [] as number[] };
  const perGiB = (seconds: number) => seconds / (bytes / 2 ** 30);
  // Each side uploads a fresh copy, written back to disk before the clock starts, so that both
  // read the same way (the uploader also frees its folder once committed, as it does the trainer's).
  const freshCopy = async (name: string) => {
    const copy = join(ctx.work, name);
    await rm(copy, { recursive: true, force: true });
    await cp(source, copy, { recursive: true });
    await promisify(execFile)('sync');
    return copy;
  };
  for (let i = 0; i < ctx.repeats; i++) {
    const mine = await freshCopy('checkpoint-ours');
    let failure: Error | undefined;
    const uploader = new CheckpointUploader(minio.client, `s3://bench/ours-${i}/`, 100, { committed: () => {}, retrying: (_, err) => (failure = err), failed: (_, err) => (failure = err) });
    let t0 = performance.now();
    const cpu0 = process.cpuUsage();
    uploader.submit(1, mine);
    await uploader.drain();
    ours.push(bytes / MiB / ((performance.now() - t0) / 1000));
    const used = process.cpuUsage(cpu0);
    cpu.ours.push(perGiB((used.user + used.system) / 1e6));
    if (failure) throw failure;

    const theirs = await freshCopy('checkpoint-mc');
    t0 = performance.now();
    // /usr/bin/time reports mc's own CPU seconds on stderr.
    const { stderr } = await promisify(execFile)('/usr/bin/time', ['-f', 'cpu %U %S', tools.mc, '--config-dir', mcConfig, '--quiet', 'cp', '--recursive', `${theirs}/`, `bench/bench/peer-${i}/`], { env: mcEnv });
    peer.push(bytes / MiB / ((performance.now() - t0) / 1000));
    const [, user, system] = /cpu ([\d.]+) ([\d.]+)/.exec(stderr)!;
    cpu.peer.push(perGiB(Number(user) + Number(system)));
    await rm(theirs, { recursive: true, force: true });
    // Gigabytes per repeat: gone before the next, so that the disk never fills.
    await deletePrefix(minio.client, `s3://bench/ours-${i}/`);
    await deletePrefix(minio.client, `s3://bench/peer-${i}/`);
  }
  await rm(source, { recursive: true, force: true });
  return {
    ours,
    peer,
    notes: { folder_mib: Math.round(bytes / MiB), files: 3 + 64 + 1, ours_client_cpu_seconds_per_gib: median(cpu.ours), mc_client_cpu_seconds_per_gib: median(cpu.peer) },
  };
}
