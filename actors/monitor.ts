// `troupe status`, `troupe tap` and `troupe dead`: watch and repair a pipeline from any shell.
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { codes, decode, subjects, TroupeError, type DeadLetter } from '../messages/mod.ts';
import { readLease } from '../storage/mod.ts';
import { itemsPerMessage } from './progress.ts';

/** What a replica's heartbeat carries (see ReplicaStats). */
interface Beat { replica: string; role: string; stage: string; state: string; done: number; ts: number; messages?: number; items?: number; rateShare?: number; standby?: 'active' | 'parked' }

interface CommonOpts { nats?: string; out?: string; json?: boolean; count?: string }

/** Where an embedded server's URL is written, so other shells can find it. */
export function natsUrlFile(stateDir: string): string {
  return join(stateDir, 'nats-url');
}

async function natsFor(pipeline: string, opts: CommonOpts): Promise<NatsConnection> {
  let url = opts.nats ?? process.env.TROUPE_NATS_URL;
  if (!url) {
    const file = natsUrlFile(join(opts.out ?? join('out', pipeline), '.troupe'));
    url = (await readFile(file, 'utf8').catch(() => '')).trim();
    if (!url) throw new TroupeError(codes.BAD_OPTION, `no NATS URL: give --nats URL, set TROUPE_NATS_URL, or --out DIR of a running job (looked for ${file})`);
  }
  return connect({ servers: url, name: `troupe monitor ${pipeline}` });
}

/** JSON-friendly view of a decoded message: binary shown as its length. */
export function printable(v: unknown, depth = 0): unknown {
  if (v instanceof Uint8Array) return `<${v.byteLength} bytes>`;
  if (typeof v === 'string' && v.length > 200) return `${v.slice(0, 200)}…(${v.length} chars)`;
  if (Array.isArray(v)) return depth > 4 ? '[…]' : v.slice(0, 20).map((x) => printable(x, depth + 1));
  if (v && typeof v === 'object') return depth > 4 ? '{…}' : Object.fromEntries(Object.entries(v).map(([k, x]) => [k, printable(x, depth + 1)]));
  return v;
}

async function stageNames(jsm: JetStreamManager, pipeline: string): Promise<string[]> {
  const prefix = `TROUPE_${pipeline}_WORK_`;
  const out: string[] = [];
  for await (const name of jsm.streams.names()) if (name.startsWith(prefix)) out.push(name.slice(prefix.length));
  return out;
}

export interface StatusReport {
  pipeline: string;
  stages: Array<{ stage: string; queued: number; inFlight: number; done: number; redelivered: number; ratePerSec: number }>;
  deadLetters: number;
  writer: { host: string; pid: number; since: string; epoch: number } | null;
  /** `rateShare`: for Fetchers with rate limits, how many Fetchers divide each limit. `standby`: Generators beyond their machine's cores (actors/standby.ts). */
  replicas: Array<{ replica: string; role: string; state: string; done: number; secondsAgo: number; rateShare?: number; standby?: 'active' | 'parked' }>;
}

/** Gathers a pipeline's status from NATS alone (streams, consumers, lease, heartbeats). */
export async function pipelineStatus(nc: NatsConnection, pipeline: string, sampleMs = 1_000): Promise<StatusReport> {
  const jsm = await jetstreamManager(nc);
  const s = subjects(pipeline);
  const beats = new Map<string, Beat>();
  const sub = nc.subscribe(`troupe.${pipeline}.events.*.heartbeat`, {
    callback: (_e, m) => { try { const b = decode(m.data) as Beat; beats.set(b.replica, b); } catch { /* not ours */ } },
  });
  const names = await stageNames(jsm, pipeline);
  if (names.length === 0) throw new TroupeError(codes.BAD_OPTION, `pipeline ${pipeline} has no streams on this server (never started, or another NATS)`);
  const sample = async () => Promise.all(names.map(async (stage) => {
    const info = await jsm.streams.info(s.workStream(stage));
    const c = await jsm.consumers.info(s.workStream(stage), s.consumer(stage));
    return { stage, messages: info.state.messages, lastSeq: info.state.last_seq, queued: c.num_pending, pending: c.num_ack_pending, redelivered: c.num_redelivered };
  }));
  const first = await sample();
  await sleep(sampleMs);
  const second = await sample();
  sub.unsubscribe();
  const dead = await jsm.streams.info(s.deadStream()).then((i) => i.state.messages, () => 0);
  const lease = await readLease(nc, pipeline).catch(() => undefined);
  const now = Date.now();
  return {
    pipeline,
    // The streams count messages; a frame carries several items. Scaled by the items per
    // message the stage's replicas report in their heartbeats (an estimate).
    stages: second.map((b, i) => {
      const a = first[i]!;
      const seen = [...beats.values()].filter((x) => x.stage === b.stage);
      const k = itemsPerMessage(seen.reduce((n, x) => n + (x.messages ?? 0), 0), seen.reduce((n, x) => n + (x.items ?? 0), 0));
      const done = b.lastSeq - b.messages;
      return { stage: b.stage, queued: Math.round(b.queued * k), inFlight: Math.round(b.pending * k), done: Math.round(done * k), redelivered: b.redelivered,
        ratePerSec: Math.max(0, Math.round((done - (a.lastSeq - a.messages)) * k * 1000 / sampleMs)) };
    }),
    deadLetters: dead,
    writer: lease ? { host: lease.host, pid: lease.pid, since: lease.since, epoch: lease.epoch } : null,
    replicas: [...beats.values()].map((b) => ({
      replica: b.replica, role: b.role, state: b.state, done: b.done, secondsAgo: Math.round((now - b.ts) / 1000),
      ...(b.rateShare === undefined ? {} : { rateShare: b.rateShare }),
      ...(b.standby === undefined ? {} : { standby: b.standby }),
    })),
  };
}

export async function statusCommand(pipeline: string, opts: CommonOpts): Promise<void> {
  const nc = await natsFor(pipeline, opts);
  try {
    const r = await pipelineStatus(nc, pipeline);
    if (opts.json) { console.log(JSON.stringify(r, null, 2)); return; }
    console.log(`pipeline ${pipeline}`);
    for (const st of r.stages) console.log(`  ${st.stage.padEnd(9)} queued ${st.queued}  in flight ${st.inFlight}  done ${st.done}  redelivered ${st.redelivered}  ${st.ratePerSec}/s`);
    console.log(`  dead letters ${r.deadLetters}`);
    console.log(`  writer ${r.writer ? `${r.writer.host} pid ${r.writer.pid} since ${r.writer.since} (epoch ${r.writer.epoch})` : 'none'}`);
    for (const rep of r.replicas) {
      const share = rep.rateShare === undefined ? '' : `  rate limits 1/${rep.rateShare}`;
      const standby = rep.standby === undefined ? '' : `  standby (${rep.standby})`;
      console.log(`  replica ${rep.replica} ${rep.role} ${rep.state} done ${rep.done}${share}${standby} (${rep.secondsAgo}s ago)`);
    }
  } finally {
    await nc.close();
  }
}

export async function tapCommand(pipeline: string, stage: string | undefined, opts: CommonOpts): Promise<void> {
  const nc = await natsFor(pipeline, opts);
  const filter = stage ? [`troupe.${pipeline}.*.${stage}`, `troupe.${pipeline}.events.${stage}.>`] : [`troupe.${pipeline}.>`];
  const limit = opts.count ? Number(opts.count) : Infinity;
  let seen = 0;
  console.error(`troupe tap: ${filter.join(' ')} (Ctrl+C to stop)`);
  await new Promise<void>((resolve) => {
    const subs = filter.map((f) => nc.subscribe(f, {
      callback: (_e, m) => {
        let values: unknown[];
        try {
          const v = decode(m.data);
          // A frame (several items in one work message) prints as one line per item.
          values = Array.isArray(v) && m.subject.includes('.work.') ? v : [v];
        } catch (err) { values = [`<undecodable: ${(err as Error).message}>`]; }
        for (const v of values) {
          if (seen >= limit) break;
          console.log(`${m.subject} ${JSON.stringify(printable(v))}`);
          seen++;
        }
        if (seen >= limit) { for (const s of subs) s.unsubscribe(); resolve(); }
      },
    }));
    process.once('SIGINT', () => resolve());
  });
  await nc.close();
}

export async function deadCommand(pipeline: string, action: string, seq: string | undefined, opts: CommonOpts): Promise<void> {
  const nc = await natsFor(pipeline, opts);
  try {
    const out = await deadLetters(nc, pipeline, action, seq);
    if (opts.json || action === 'show') console.log(JSON.stringify(out, null, 2));
    else if (action === 'list') for (const l of out as Array<{ seq: number; stage: string; key: string | null; error: { code: string; message: string }; attempts: number }>) console.log(`${l.seq}\t${l.stage}\t${l.key}\t${l.attempts} attempt(s)\t${l.error.code}: ${l.error.message}`);
    else console.log(`replayed ${(out as number[]).length} dead letter(s): ${(out as number[]).join(', ')}`);
  } finally {
    await nc.close();
  }
}

/** Lists (`list`), shows (`show SEQ`) or replays (`replay SEQ|all`) a pipeline's dead letters. */
export async function deadLetters(nc: NatsConnection, pipeline: string, action: string, seq?: string): Promise<unknown> {
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  const s = subjects(pipeline);
  const stream = s.deadStream();
  const info = await jsm.streams.info(stream);
  const read = async (n: number) => {
    const m = await jsm.streams.getMessage(stream, { seq: n }).catch(() => null);
    return m ? { seq: n, letter: decode(m.data) as DeadLetter } : undefined;
  };
  const all = async () => {
    const out: Array<{ seq: number; letter: DeadLetter }> = [];
    if (info.state.messages === 0) return out;
    for (let n = info.state.first_seq; n <= info.state.last_seq; n++) {
      const r = await read(n);
      if (r) out.push(r);
    }
    return out;
  };
  const one = async () => {
    const n = Number(seq);
    if (!Number.isSafeInteger(n)) throw new TroupeError(codes.BAD_OPTION, `troupe dead ${action} needs a dead-letter sequence number (got ${JSON.stringify(seq)})`);
    const r = await read(n);
    if (!r) throw new TroupeError(codes.BAD_OPTION, `no dead letter ${n} in pipeline ${pipeline}`);
    return r;
  };
  if (action === 'list') return (await all()).map(({ seq: n, letter: l }) => ({ seq: n, stage: l.stage, key: l.key, attempts: l.attempts, error: l.error, ts: new Date(l.ts).toISOString() }));
  if (action === 'show') {
    const { seq: n, letter } = await one();
    return { seq: n, ...(printable({ ...letter, envelope: letter.envelope }) as object) };
  }
  if (action === 'replay') {
    const targets = seq === 'all' ? await all() : [await one()];
    const replayed: number[] = [];
    for (const { seq: n, letter } of targets) {
      await js.publish(s.work(letter.stage), letter.data, { msgID: `replay:${letter.stage}:${n}` });
      await jsm.streams.deleteMessage(stream, n);
      replayed.push(n);
    }
    return replayed;
  }
  throw new TroupeError(codes.BAD_OPTION, `troupe dead: unknown action "${action}" (list, show, replay)`);
}
