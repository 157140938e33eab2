import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { join } from 'node:path';
import { NatsServer } from './server.ts';

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
    nc = await connect({ servers: target, name: options.name ?? 'troupe', maxReconnectAttempts: -1, reconnectTimeWait: 250 });
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
