import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, open, readFile, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { createServer } from 'node:net';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { codes, TroupeError } from './errors.ts';

/** Where a nats-server binary is looked for when `TROUPE_NATS_SERVER` is not set. */
const CANDIDATES = ['/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server'];

export interface NatsServerOptions {
  /** Folder for JetStream storage and the server log. */
  dir: string;
  /** Port to listen on; a free loopback port when not given. The port is kept across restarts. */
  port?: number;
  /** Path of the nats-server binary. @default $TROUPE_NATS_SERVER, then PATH and /usr/sbin */
  binary?: string;
  /**
   * Soft memory limit of the server's Go runtime (`GOMEMLIMIT`: a number of bytes with an
   * optional unit B, KiB, MiB, GiB or TiB, or `off`). See {@link DEFAULT_MEMORY_LIMIT}.
   * @default $TROUPE_NATS_MEMORY_LIMIT, then $GOMEMLIMIT, then DEFAULT_MEMORY_LIMIT
   */
  memoryLimit?: string;
  /**
   * Threads running the server's Go code at once (`GOMAXPROCS`). See {@link defaultMaxProcs}.
   * @default $TROUPE_NATS_MAX_PROCS, then $GOMAXPROCS, then defaultMaxProcs()
   */
  maxProcs?: number;
}

/**
 * The embedded server's default soft memory limit. Go's collector otherwise lets the heap
 * grow to twice what is live before collecting: scenario 5 of the benchmark saw the server's
 * RSS go from 28 MiB at 10k items to 63 MiB at 1M, most of it garbage not yet collected.
 * Under the limit the collector runs sooner as the heap nears it, and never takes more than
 * half the server's CPU when what is live exceeds it (Go's own cap). Its cost on the no-op
 * pipeline at 30k items was 2% of items/s (README, "What the floors are made of"). A job whose
 * streams hold more in memory (very large messages, many stages) can raise it.
 */
export const DEFAULT_MEMORY_LIMIT = '32MiB';

/** Checks a `GOMEMLIMIT` value; returns it, or throws naming what was wrong. */
function memoryLimitOf(value: string, from: string): string {
  const v = value.trim();
  if (v === 'off' || /^\d+(B|KiB|MiB|GiB|TiB)?$/.test(v)) return v;
  throw new TroupeError(codes.BAD_OPTION,
    `${from} must be a number of bytes with an optional unit B, KiB, MiB, GiB or TiB (as Go's GOMEMLIMIT), or off; got ${JSON.stringify(value)}`);
}

function memoryLimitFrom(option: string | undefined): string {
  if (option !== undefined) return memoryLimitOf(option, 'memoryLimit');
  if (process.env.TROUPE_NATS_MEMORY_LIMIT) return memoryLimitOf(process.env.TROUPE_NATS_MEMORY_LIMIT, 'TROUPE_NATS_MEMORY_LIMIT');
  // A limit set for every Go program in this environment is kept as it is.
  if (process.env.GOMEMLIMIT) return process.env.GOMEMLIMIT;
  return DEFAULT_MEMORY_LIMIT;
}

/**
 * The embedded server's default `GOMAXPROCS`: half the cores, at least one. The server shares
 * the machine with the job's own threads, and Go's scheduler keeps idle threads spinning for
 * work after each wake-up: with one thread per core, the server of a 2-core run spent 25–30%
 * more CPU for the same messages (README, "What the floors are made of"). Half the cores is
 * still more than the server needs: the five-stage no-op pipeline at 10k items/s keeps it
 * below half a core.
 */
export function defaultMaxProcs(): number {
  return Math.max(1, Math.floor(availableParallelism() / 2));
}

function maxProcsOf(value: unknown, from: string): number {
  const n = typeof value === 'string' && /^\s*\d+\s*$/.test(value) ? Number(value) : value;
  if (Number.isSafeInteger(n) && (n as number) >= 1) return n as number;
  throw new TroupeError(codes.BAD_OPTION, `${from} must be a whole number of threads, 1 or more (as Go's GOMAXPROCS); got ${JSON.stringify(value)}`);
}

function maxProcsFrom(option: number | undefined): number {
  if (option !== undefined) return maxProcsOf(option, 'maxProcs');
  if (process.env.TROUPE_NATS_MAX_PROCS) return maxProcsOf(process.env.TROUPE_NATS_MAX_PROCS, 'TROUPE_NATS_MAX_PROCS');
  // Set for every Go program in this environment: kept as it is (Go reads it, not troupe).
  const go = Number(process.env.GOMAXPROCS || undefined);
  if (Number.isSafeInteger(go) && go >= 1) return go;
  return defaultMaxProcs();
}

/** Finds a nats-server binary or explains how to get one. */
export function findNatsServer(binary?: string): string {
  const explicit = binary ?? process.env.TROUPE_NATS_SERVER;
  if (explicit) {
    if (!existsSync(explicit)) throw noServer(`nats-server binary ${explicit} does not exist`);
    return explicit;
  }
  for (const dir of (process.env.PATH ?? '').split(':').filter(Boolean)) {
    const p = join(dir, 'nats-server');
    if (existsSync(p)) return p;
  }
  const found = CANDIDATES.find((p) => existsSync(p));
  if (!found) throw noServer('no nats-server binary found on PATH or in /usr/sbin');
  return found;
}

function noServer(why: string): TroupeError {
  return new TroupeError(codes.NO_NATS_SERVER,
    `${why}. Install one (Debian/Ubuntu: apt-get install -y nats-server; or a release from ` +
    `the nats-server project), set TROUPE_NATS_SERVER to its path, or point troupe at a ` +
    `running server with --nats nats://host:4222 or TROUPE_NATS_URL.`);
}

/** Asks the kernel for a free loopback TCP port. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/**
 * A nats-server child process with JetStream, on a loopback port, storing in `dir`.
 * Used as the embedded server of a job and by the tests; can be stopped and restarted
 * (same port, same store) for fault tests.
 */
export class NatsServer {
  readonly dir: string;
  readonly binary: string;
  readonly logFile: string;
  /** The `GOMEMLIMIT` the server runs with. */
  readonly memoryLimit: string;
  /** The `GOMAXPROCS` the server runs with. */
  readonly maxProcs: number;
  port = 0;
  #child: ChildProcess | undefined;
  #log: FileHandle | undefined;
  #exited: Promise<void> = Promise.resolve();

  private constructor(dir: string, binary: string, go: { memoryLimit: string; maxProcs: number }) {
    this.dir = dir;
    this.binary = binary;
    this.memoryLimit = go.memoryLimit;
    this.maxProcs = go.maxProcs;
    this.logFile = join(dir, 'nats-server.log');
  }

  static async start(options: NatsServerOptions): Promise<NatsServer> {
    const go = { memoryLimit: memoryLimitFrom(options.memoryLimit), maxProcs: maxProcsFrom(options.maxProcs) };
    const server = new NatsServer(options.dir, findNatsServer(options.binary), go);
    server.port = options.port ?? (await freePort());
    await server.#spawn();
    return server;
  }

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.#child !== undefined && this.#child.exitCode === null && this.#child.signalCode === null;
  }

  get pidFile(): string {
    return join(this.dir, 'nats-server.pid');
  }

  /**
   * A job killed with SIGKILL cannot stop its embedded server, which then keeps running on
   * the job's store. Before starting on that store again, stop the one a pid file names —
   * if it is still a nats-server using this folder.
   */
  async #stopOrphan(): Promise<void> {
    const pid = Number((await readFile(this.pidFile, 'utf8').catch(() => '')).trim());
    if (!Number.isSafeInteger(pid) || pid <= 0) return;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (!cmdline.includes('nats-server') || !cmdline.includes(join(this.dir, 'jetstream'))) return;
    process.kill(pid, 'SIGTERM');
    for (let i = 0; i < 200 && (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')); i++) await sleep(25);
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  }

  async #spawn(): Promise<void> {
    await mkdir(join(this.dir, 'jetstream'), { recursive: true });
    await this.#stopOrphan();
    this.#log = await open(this.logFile, 'a');
    const logStart = (await this.#log.stat()).size;
    const args = ['-a', '127.0.0.1', '-p', String(this.port), '-js', '-sd', join(this.dir, 'jetstream'),
      '-l', this.logFile];
    const env = { ...process.env, GOMEMLIMIT: this.memoryLimit, GOMAXPROCS: String(this.maxProcs) };
    const child = spawn(this.binary, args, { stdio: ['ignore', 'ignore', this.#log.fd], env });
    this.#child = child;
    this.#exited = new Promise((resolve) => child.once('exit', () => resolve()));
    if (child.pid) await writeFile(this.pidFile, String(child.pid));
    const started = Date.now();
    for (;;) {
      if (!this.running) throw new Error(`nats-server exited at start:\n${await this.log()}`);
      if ((await this.log()).slice(logStart).includes('Server is ready')) return;
      if (Date.now() - started > 15_000) {
        await this.stop();
        throw new Error(`nats-server did not become ready within 15 s:\n${await this.log()}`);
      }
      await sleep(25);
    }
  }

  /** The server's log so far, for failure messages. */
  async log(): Promise<string> {
    return readFile(this.logFile, 'utf8').catch(() => '');
  }

  /** Stops the server (SIGTERM, then SIGKILL after 5 s). Safe to call twice. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.#child;
    if (child && this.running) {
      child.kill(signal);
      const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await this.#exited;
      clearTimeout(killer);
    }
    this.#child = undefined;
    await rm(this.pidFile, { force: true });
    await this.#log?.close().catch(() => undefined);
    this.#log = undefined;
  }

  /** Stops and starts the server again on the same port with the same store. */
  async restart(): Promise<void> {
    await this.stop();
    await this.#spawn();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}
