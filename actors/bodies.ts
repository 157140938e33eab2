import { BodyStore, isBodyRef } from '../messages/bodies.ts';
import type { ReplicaEnv } from './env.ts';

const stores = new WeakMap<ReplicaEnv, Promise<BodyStore>>();

export function bodyStore(env: ReplicaEnv): Promise<BodyStore> {
  let s = stores.get(env);
  if (!s) {
    // Bodies are read once downstream; a day's TTL bounds the bucket without a delete that a
    // redelivered message could still need.
    s = BodyStore.open(env.nats.nc, env.def.name, { ttlMs: 24 * 3600_000 });
    stores.set(env, s);
  }
  return s;
}

/** Replaces a fetched response's body reference (large bodies travel by object-store ref) with the bytes. */
export async function resolveBodies(env: ReplicaEnv, body: unknown): Promise<unknown> {
  const response = (body as { response?: { body?: unknown } } | null)?.response;
  if (response && isBodyRef(response.body)) {
    const bytes = await (await bodyStore(env)).get(response.body);
    return { ...(body as object), response: { ...response, body: bytes } };
  }
  return body;
}
