// Hosts for a multi-node test on one machine: each a loopback address (127.0.0.1, 127.0.0.2, ...)
// served by an sshd of its own (Debian's openssh-server, installed by setup), with a host key and
// a client key made for the test, and an ssh config that reaches them. Run as root: sshd logs in
// as the user it runs as only when that is root.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './minio.js';
import { halt, waitFor } from './processes.js';

export interface SshHosts {
  /** An ssh config (port, key, known host keys) for every host: what `ssh -F` and pdsh take. */
  sshConfig: string;
  /** The pid of each host's listening sshd, by address. */
  sshd: Record<string, number>;
  /** What each host's sshd logged (the sessions it accepted). */
  log(address: string): Promise<string>;
  stop(): Promise<void>;
}

const run = promisify(execFile);
const listening = (host: string, port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = createConnection({ host, port }, () => {
      socket.end();
      resolve(true);
    }).on('error', () => resolve(false));
  });

export async function startSshHosts(addresses: string[], dir: string): Promise<SshHosts> {
  await mkdir(dir, { recursive: true });
  // The privilege-separation folder sshd insists on.
  await mkdir('/run/sshd', { recursive: true });
  for (const key of ['host_key', 'client_key']) await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, key)]);
  await writeFile(join(dir, 'authorized_keys'), await readFile(join(dir, 'client_key.pub')));
  const hostKey = (await readFile(join(dir, 'host_key.pub'), 'utf8')).split(' ').slice(0, 2).join(' ');
  const port = await freePort();
  await writeFile(join(dir, 'known_hosts'), addresses.map((a) => `[${a}]:${port} ${hostKey}\n`).join(''));
  const sshConfig = join(dir, 'ssh_config');
  await writeFile(
    sshConfig,
    [`Host ${addresses.join(' ')}`, `  Port ${port}`, `  IdentityFile ${join(dir, 'client_key')}`, '  IdentitiesOnly yes', `  UserKnownHostsFile ${join(dir, 'known_hosts')}`, '  StrictHostKeyChecking yes', '  BatchMode yes', ''].join('\n'),
  );

  const servers: ChildProcess[] = [];
  const sshd: Record<string, number> = {};
  for (const address of addresses) {
    const config = join(dir, `sshd-${address}.conf`);
    await writeFile(
      config,
      [`ListenAddress ${address}:${port}`, `HostKey ${join(dir, 'host_key')}`, `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`, 'PasswordAuthentication no', 'KbdInteractiveAuthentication no',
        'PermitRootLogin prohibit-password', 'UsePAM no', 'StrictModes no', `PidFile ${join(dir, `sshd-${address}.pid`)}`, ''].join('\n'),
    );
    // -D: in the foreground, as our child; -E: its log, for the test to read the sessions it accepted.
    const server = spawn('/usr/sbin/sshd', ['-D', '-f', config, '-E', join(dir, `sshd-${address}.log`)], { stdio: 'ignore' });
    servers.push(server);
    sshd[address] = server.pid!;
    await waitFor(`sshd on ${address}:${port}`, async () => ((await listening(address, port)) ? true : undefined), 15_000, 100);
  }
  return {
    sshConfig,
    sshd,
    log: (address) => readFile(join(dir, `sshd-${address}.log`), 'utf8'),
    async stop() {
      for (const server of servers) await halt(server);
    },
  };
}
