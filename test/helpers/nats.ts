import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { NatsServer } from '../../messages/server.ts';

/** A real nats-server for one test file, with a client connection. */
export interface TestNats {
  server: NatsServer;
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  dir: string;
  stop(): Promise<void>;
}

/** Starts nats-server with JetStream on a free loopback port in a fresh temp folder. */
export async function startNats(): Promise<TestNats> {
  const dir = await mkdtemp(join(tmpdir(), 'troupe-test-'));
  const server = await NatsServer.start({ dir });
  const nc = await connect({ servers: server.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  return {
    server, nc, dir,
    js: jetstream(nc),
    jsm: await jetstreamManager(nc),
    async stop() {
      await nc.close().catch(() => undefined);
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Fresh temp folder, removed by the caller. */
export function tempDir(prefix = 'troupe-test-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

let counter = 0;
/** A pipeline name unique within the test run, so tests can run concurrently. */
export function uniqueName(base = 'p'): string {
  return `${base}${process.pid}x${++counter}`;
}

/** Polls `check` until it returns a truthy value or `timeoutMs` passes. */
export async function until<T>(check: () => T | Promise<T>, timeoutMs = 20_000, what = 'condition'): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}
