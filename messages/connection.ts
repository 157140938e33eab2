import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { join } from 'node:path';
import { NatsServer } from './server.ts';

/**
 * Connection options every troupe connection uses. `noAsyncTraces`: nats.js otherwise builds
 * two Error objects (stack traces) per request — every JetStream publish — which the bench
 * profile showed at ~26% of a stage's CPU; errors still carry their messages and codes.
 */
export const CONNECTION_OPTIONS = Object.freeze({ maxReconnectAttempts: -1, reconnectTimeWait: 250, noAsyncTraces: true });

export interface NatsOptions {
  /** Server URL. @default $TROUPE_NATS_URL, else an embedded nats-server */
  url?: string | undefined;
  /** Job state folder; the embedded server stores JetStream under `<stateDir>/nats`. */
  stateDir: string;
  /** Connection name shown by the server. */
  name?: string;
}

/** A connection to NATS with its JetStream handles, and the embedded server it started, if any. */
export interface NatsHandle {
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly url: string;
  /** The embedded server, when this handle started one. */
  readonly server: NatsServer | undefined;
  close(): Promise<void>;
}

/**
 * Connects to `url` (or `$TROUPE_NATS_URL`); when neither is given, starts an embedded
 * nats-server with JetStream storage in the job's state folder, so that a job resumes after
 * a restart, and stops it when the handle is closed.
 */
export async function openNats(options: NatsOptions): Promise<NatsHandle> {
  const url = options.url ?? process.env.TROUPE_NATS_URL;
  const server = url ? undefined : await NatsServer.start({ dir: join(options.stateDir, 'nats') });
  const target = url ?? server!.url;
  let nc: NatsConnection;
  try {
    nc = await connect({ ...CONNECTION_OPTIONS, servers: target, name: options.name ?? 'troupe' });
  } catch (err) {
    await server?.stop();
    throw new Error(`cannot connect to NATS at ${target}: ${(err as Error).message}`, { cause: err });
  }
  return {
    nc, url: target, server,
    js: jetstream(nc),
    jsm: await jetstreamManager(nc),
    async close() {
      await nc.drain().catch(() => nc.close());
      await server?.stop();
    },
  };
}
