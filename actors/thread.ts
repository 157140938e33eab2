// Worker-thread entry of a replica: exposes the Replica through comlink to the supervisor.
import * as Comlink from 'comlink';
import nodeEndpoint from 'comlink/dist/esm/node-adapter.mjs';
import { parentPort, workerData } from 'node:worker_threads';
import { Replica, type ReplicaConfig } from './replica.ts';

const replica = new Replica(workerData as ReplicaConfig);

/** The API the supervisor calls on a replica thread. */
export const replicaApi = {
  // comlink carries an error's name, message and stack only: keep the code in the message.
  start: () => replica.start().catch((err: unknown) => { throw withCode(err); }),
  drain: () => replica.drain(),
  close: () => replica.close(),
  stats: () => replica.stats(),
  state: () => replica.actor?.state ?? 'starting',
  /** Resolves with the actor's end: undefined when stopped, the error message when failed. */
  closed: async () => { const err = await replica.actor?.closed; return err ? `${err.name}: ${err.message}` : undefined; },
};
export type ReplicaApi = typeof replicaApi;

/** `err` with its stable code (e.g. TROUPE_LEASE_HELD) leading its message. */
function withCode(err: unknown): unknown {
  const code = (err as { code?: unknown } | null)?.code;
  if (err instanceof Error && typeof code === 'string' && !err.message.startsWith(code)) err.message = `${code}: ${err.message}`;
  return err;
}

Comlink.expose(replicaApi, nodeEndpoint(parentPort!));
