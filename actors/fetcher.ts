import { BODY_REF_THRESHOLD } from '../messages/bodies.ts';
import { isRetryable, toWire, type Delivery } from '../messages/mod.ts';
import { bodyStore } from './bodies.ts';
import type { ReplicaEnv } from './env.ts';
import { HttpFetcher, headersProvider, type FetcherOptions } from './fetcher/http.ts';
import { nextStage, replicasOf, type Fetched, type Item } from './pipeline.ts';
import { StageActor } from './stage-actor.ts';

/**
 * Calls HTTP APIs (and reads `file://` URLs) for each item: pooled connections per origin,
 * per-origin rate limits that slow the pull instead of failing, timeouts, capped retries.
 * Responses above {@link BODY_REF_THRESHOLD} travel downstream by object-store reference.
 */
export class Fetcher extends StageActor {
  readonly http: HttpFetcher;

  constructor(env: ReplicaEnv, options: { replicasSharingLimits?: number } = {}) {
    super(env);
    const spec = env.def.fetcher!;
    const http = { ...((typeof spec.http === 'function' ? spec.http(env.params) : spec.http) ?? {}) } as Record<string, unknown>;
    // A per-origin rate limit is for the whole pipeline: replicas in this process share it.
    const share = options.replicasSharingLimits ?? replicasOf(env.def, 'fetcher');
    const rate = http.rate as { perSecond: number; burst?: number } | undefined;
    if (rate && share > 1) http.rate = { ...rate, perSecond: rate.perSecond / share, burst: Math.max(1, Math.floor((rate.burst ?? rate.perSecond) / share)) };
    if (spec.headers) http.headers = headersProvider(spec.headers);
    this.http = new HttpFetcher(http as FetcherOptions);
  }

  protected handle(batch: Delivery[]): Promise<unknown[]> {
    const spec = this.env.def.fetcher!;
    return this.each(batch, async (d) => {
      const item = { key: d.env.key, body: d.env.body } as Item<unknown>;
      const req = await spec.request(item, this.ctx);
      let res;
      try {
        res = await this.http.fetch(req, this.abort.signal);
      } catch (err) {
        if (spec.permanentErrors !== 'pass' || isRetryable(err)) throw err;
        const status = (err as { status?: number }).status;
        const { code, message } = toWire(err);
        const out: Fetched<unknown> = { item: item.body, error: status === undefined ? { code, message } : { code, message, status } };
        await this.emit(nextStage(this.env.def, 'fetcher'), [{ key: d.env.key, body: out }], d);
        return;
      }
      let body: unknown = res.body;
      if (res.body.byteLength > BODY_REF_THRESHOLD) {
        body = await (await bodyStore(this.env)).put(`${this.env.run}/${d.env.key}`, res.body);
      }
      const out: Fetched<unknown> = { item: item.body, response: { url: res.url, status: res.status, headers: res.headers, body: body as Uint8Array } };
      await this.emit(nextStage(this.env.def, 'fetcher'), [{ key: d.env.key, body: out }], d);
    });
  }

  protected override async onClose(): Promise<void> {
    await super.onClose();
    await this.http.close();
  }
}
