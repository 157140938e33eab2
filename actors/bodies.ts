import { BodyStore, isBodyRef } from '../messages/bodies.ts';
import type { ReplicaEnv } from './env.ts';

const stores = new WeakMap<ReplicaEnv, Promise<BodyStore>>();

export function bodyStore(env: ReplicaEnv): Promise<BodyStore> {
  let s = stores.get(env);
  if (!s) {
    s = BodyStore.open(env.nats.nc, env.def.name);
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
