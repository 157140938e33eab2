// Worker-thread entry of a replica: exposes the Replica through comlink to the supervisor.
import * as Comlink from 'comlink';
import nodeEndpoint from 'comlink/dist/esm/node-adapter.mjs';
import { parentPort, workerData } from 'node:worker_threads';
import { Replica, type ReplicaConfig } from './replica.ts';

const replica = new Replica(workerData as ReplicaConfig);

/** The API the supervisor calls on a replica thread. */
export const replicaApi = {
  start: () => replica.start(),
  drain: () => replica.drain(),
  close: () => replica.close(),
  stats: () => replica.stats(),
  state: () => replica.actor?.state ?? 'starting',
  /** Resolves with the actor's end: undefined when stopped, the error message when failed. */
  closed: async () => { const err = await replica.actor?.closed; return err ? `${err.name}: ${err.message}` : undefined; },
};
export type ReplicaApi = typeof replicaApi;

Comlink.expose(replicaApi, nodeEndpoint(parentPort!));
