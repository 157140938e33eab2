import { BODY_REF_THRESHOLD } from '../messages/bodies.ts';
import { isRetryable, toWire, type Delivery } from '../messages/mod.ts';
import { bodyStore } from './bodies.ts';
import type { ReplicaEnv } from './env.ts';
import { HttpFetcher, headersProvider, type FetcherOptions } from './fetcher/http.ts';
import { LimitShare, type LimitShareOptions } from './fetcher/share.ts';
import { maxInFlightOf, nextStage, replicasOf, type Fetched, type Item } from './pipeline.ts';
import { StageActor, type ReplicaStats } from './stage-actor.ts';

/**
 * A rate-limited Fetcher holds at most this many seconds of requests at its share of the
 * limit: more would only wait for tokens while other replicas could take them.
 */
export const RATE_SLOT_SECONDS = 2;

/**
 * Calls HTTP APIs (and reads `file://` URLs) for each item: pooled connections per origin,
 * per-origin rate limits shared by every Fetcher replica (see fetcher/share.ts) that slow the
 * pull instead of failing, timeouts, capped retries. Responses above
 * {@link BODY_REF_THRESHOLD} travel downstream by object-store reference.
 */
export class Fetcher extends StageActor {
  readonly http: HttpFetcher;
  /** The Fetchers dividing the pipeline's rate limits; undefined when it has none. */
  readonly limitShare: LimitShare | undefined;

  constructor(env: ReplicaEnv, options: { replicasSharingLimits?: number; share?: LimitShareOptions } = {}) {
    const spec = env.def.fetcher!;
    const http = { ...((typeof spec.http === 'function' ? spec.http(env.params) : spec.http) ?? {}) } as FetcherOptions;
    if (spec.headers) http.headers = headersProvider(spec.headers);
    const engine = new HttpFetcher(http);
    // A per-origin rate limit is for the whole pipeline: every Fetcher replica, on any
    // machine, takes its share. Those its supervisor starts are known from the start.
    const known = Math.max(1, options.replicasSharingLimits ?? replicasOf(env.def, 'fetcher'));
    // When the share caps the handler slots, buffer one message only: frames prefetched
    // beyond that would sit in this replica's buffer, out of the other Fetchers' reach.
    const slots = slotsFor(engine, known);
    super(env, slots !== undefined && slots < maxInFlightOf(env.def, 'fetcher') ? { prefetch: 1 } : {});
    this.http = engine;
    this.#setShare(known);
    const o = this.http.options;
    if (Number.isFinite(o.rate.perSecond) || o.rateByOrigin.size > 0) {
      this.limitShare = new LimitShare(env.nats.nc, env.def.name, env.replicaId, (n) => this.#setShare(n), { known, ...options.share });
    }
  }

  /**
   * Takes `1/n` of every rate limit, and no more items at once than that share can start in
   * {@link RATE_SLOT_SECONDS}: the rest wait, then go back to the stage for the other
   * Fetchers instead of queueing here for a token.
   */
  #setShare(n: number): void {
    this.http.setShare(n);
    const slots = slotsFor(this.http, n);
    if (slots !== undefined) this.consumer.setSlots(slots);
  }

  protected override async onStart(): Promise<void> {
    // Requests wait for the others to have made room; pulling starts meanwhile.
    this.limitShare?.start(this.abort.signal).catch(() => undefined);
    await super.onStart();
  }

  override stats(): ReplicaStats {
    const s = super.stats();
    return this.limitShare ? { ...s, rateShare: this.limitShare.share } : s;
  }

  protected handle(batch: Delivery[]): Promise<unknown[]> {
    const spec = this.env.def.fetcher!;
    return this.each(batch, async (d) => {
      await this.limitShare?.ready();
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
    this.limitShare?.close();
    await super.onClose();
    await this.http.close();
  }
}

/** Handler slots a Fetcher needs at a share of `n`; undefined when some origins are unlimited. */
function slotsFor(http: HttpFetcher, n: number): number | undefined {
  const o = http.options;
  if (!Number.isFinite(o.rate.perSecond)) return undefined;
  const fastest = Math.max(o.rate.perSecond, ...[...o.rateByOrigin.values()].map((r) => r.perSecond)) / n;
  return Math.max(1, Math.ceil(fastest * RATE_SLOT_SECONDS));
}
