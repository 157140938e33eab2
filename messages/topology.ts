import {
  AckPolicy, DiscardPolicy, RetentionPolicy, StorageType,
  type JetStreamClient, type JetStreamManager, type StreamConfig, type ConsumerConfig, type MsgRequest,
} from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import { decode, encode } from './codec.ts';
import type { DeadLetter } from './consumer.ts';
import { parseEnvelope, type Envelope } from './envelope.ts';
import { codes, toWire, TroupeError } from './errors.ts';
import { deadLetterId, subjects } from './subjects.ts';

/** Limits of one stage's work stream and consumer. All optional; see {@link stageDefaults}. */
export interface StageLimits {
  /** Messages a stage may hold (queued + un-acked); publishes beyond it wait. @default 10_000 */
  maxMessages?: number;
  /** Bytes a stage may hold. @default 256 MiB */
  maxBytes?: number;
  /** Largest single message in bytes. @default 1 MiB */
  maxMessageSize?: number;
  /**
   * Window in which the server deduplicates a re-published item, ms. Past it the Writer's
   * ledger still recognises a message it applied; the window bounds the server's memory
   * (it keeps every message id it saw within it). @default 30_000
   */
  duplicateWindowMs?: number;
  /** Un-acked messages across all replicas of the stage. @default 1_000 */
  maxAckPending?: number;
  /** Time a replica has to ack (or signal progress) before redelivery, ms. @default 30_000 */
  ackWaitMs?: number;
  /** Deliveries of one message before it goes to dead letters. @default 5 */
  maxAttempts?: number;
}

export type StageConfig = Required<StageLimits> & { name: string };

export const stageDefaults: Readonly<Required<StageLimits>> = Object.freeze({
  maxMessages: 10_000,
  maxBytes: 256 * 1024 * 1024,
  maxMessageSize: 1024 * 1024,
  duplicateWindowMs: 30_000,
  maxAckPending: 1_000,
  ackWaitMs: 30_000,
  maxAttempts: 5,
});

const positiveInts = ['maxMessages', 'maxBytes', 'maxMessageSize', 'duplicateWindowMs', 'maxAckPending',
  'ackWaitMs', 'maxAttempts'] as const;

/** Merges a stage's limits with the defaults and validates every one, naming the bad option. */
export function stageConfig(name: string, limits: StageLimits = {}, prefix = `stages.${name}`): StageConfig {
  const merged = { ...stageDefaults, ...stripUndefined(limits), name };
  for (const k of positiveInts) {
    const v = merged[k];
    if (!Number.isSafeInteger(v) || v <= 0) {
      throw new TroupeError(codes.BAD_OPTION, `options.${prefix}.${k} must be a positive integer (got ${JSON.stringify(v)})`);
    }
  }
  if (merged.ackWaitMs < 1000) {
    throw new TroupeError(codes.BAD_OPTION, `options.${prefix}.ackWaitMs must be at least 1000 (got ${merged.ackWaitMs})`);
  }
  return merged;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Dead letters are kept (limits retention) up to these bounds; a full store refuses new ones. */
const DEAD_LIMITS = { max_msgs: 1_000_000, max_bytes: 1024 * 1024 * 1024 };

/**
 * Creates or updates the JetStream topology of a pipeline: for each stage a bounded
 * work-queue stream (discard-new, duplicate window) and one durable pull consumer, plus one
 * stream for the pipeline's dead letters.
 */
export async function ensureTopology(jsm: JetStreamManager, pipeline: string, stages: StageConfig[]): Promise<void> {
  const s = subjects(pipeline);
  for (const stage of stages) {
    await upsertStream(jsm, {
      name: s.workStream(stage.name),
      subjects: [s.work(stage.name)],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      discard: DiscardPolicy.New,
      max_msgs: stage.maxMessages,
      max_bytes: stage.maxBytes,
      // No per-stream message size limit: an oversized message from a foreign publisher
      // must reach the consumer, which dead-letters it as TROUPE_TOO_LARGE.
      duplicate_window: nanos(stage.duplicateWindowMs),
      num_replicas: 1,
    });
    await upsertConsumer(jsm, s.workStream(stage.name), {
      durable_name: s.consumer(stage.name),
      ack_policy: AckPolicy.Explicit,
      ack_wait: nanos(stage.ackWaitMs),
      max_ack_pending: stage.maxAckPending,
      // The client dead-letters a message delivered more than maxAttempts times; the server
      // keeps one delivery more so a replica that dies on the last attempt does not strand
      // the message in the work queue (the job could then never finish). Retry delays are
      // set per nak by the client: the server's `backoff` would replace ack_wait, which
      // long handlers rely on together with working().
      max_deliver: stage.maxAttempts + 1,
    });
    await dropAcked(jsm, s.workStream(stage.name), s.work(stage.name), s.consumer(stage.name));
  }
  await upsertStream(jsm, {
    name: s.deadStream(),
    subjects: [`troupe.${pipeline}.dead.>`],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.New,
    ...DEAD_LIMITS,
    num_replicas: 1,
  });
}

async function upsertStream(jsm: JetStreamManager, cfg: Partial<StreamConfig> & { name: string }): Promise<void> {
  try {
    await jsm.streams.info(cfg.name);
  } catch {
    await jsm.streams.add(cfg);
    return;
  }
  const { retention: _r, storage: _s, ...mutable } = cfg;
  await jsm.streams.update(cfg.name, mutable);
}

async function upsertConsumer(jsm: JetStreamManager, stream: string, cfg: Partial<ConsumerConfig> & { durable_name: string }): Promise<void> {
  try {
    await jsm.consumers.info(stream, cfg.durable_name);
  } catch {
    await jsm.consumers.add(stream, cfg);
    return;
  }
  await jsm.consumers.update(stream, cfg.durable_name, cfg);
}

/**
 * Removes messages a work stream still holds although its consumer acked them. After an
 * unclean stop (nats-server killed; seen with 2.9.10) the consumer's ack floor can be
 * recovered while the work-queue removals of those acks are not: the consumer never
 * delivers such messages again, yet they count as queued for ever and the job never ends.
 * They are deleted one by one: a purge up to the floor would also wipe the consumer's
 * pending (un-acked) messages on 2.9, which then would never be redelivered.
 */
async function dropAcked(jsm: JetStreamManager, stream: string, subject: string, consumer: string): Promise<void> {
  const floor = (await jsm.consumers.info(stream, consumer)).ack_floor.stream_seq;
  let seq = (await jsm.streams.info(stream)).state.first_seq;
  while (seq > 0 && seq <= floor) {
    // The server's MSG.GET takes `next_by_subj` (the next message at or after `seq`); the
    // client's type for getMessage does not list it.
    const next = { seq, next_by_subj: subject } as unknown as MsgRequest;
    const m = await jsm.streams.getMessage(stream, next).catch(() => null);
    if (!m || m.seq > floor) break;
    await jsm.streams.deleteMessage(stream, m.seq, false);
    seq = m.seq + 1;
  }
}

/** Deletes every stream of a pipeline (for tests and `troupe reset`). */
export async function deleteTopology(jsm: JetStreamManager, pipeline: string): Promise<void> {
  const prefix = `TROUPE_${pipeline}_`;
  for await (const name of jsm.streams.names()) {
    if (name.startsWith(prefix)) await jsm.streams.delete(name);
  }
}

/**
 * Dead-letters the messages of a stage that its consumer has given up on without an ack:
 * delivered `max_deliver` times (maxAttempts + 1), each time to a replica that stopped before
 * settling it (killed, crashed, or crashed by another item it held). The server delivers such
 * a message no more but keeps it in the work queue, where nothing would ever take it: a job
 * would finish without it. Each goes to the stage's dead letters with its original bytes
 * (`troupe dead` lists and replays it) and leaves the work queue. Deduplicated with the
 * consumer's own dead letters (see deadLetterId), so running it twice is harmless. Returns
 * how many it moved.
 */
export async function deadLetterStranded(js: JetStreamClient, jsm: JetStreamManager, pipeline: string, stage: StageConfig): Promise<number> {
  const s = subjects(pipeline);
  const stream = s.workStream(stage.name);
  const [si, ci] = await Promise.all([jsm.streams.info(stream), jsm.consumers.info(stream, s.consumer(stage.name))]);
  // At or below the ack floor, whatever is still in a work queue was never acked; and with
  // nothing awaiting an ack, so is everything the consumer has delivered. (A message
  // published after this snapshot is above both and left alone.)
  const floor = ci.num_ack_pending === 0 ? ci.delivered.stream_seq : ci.ack_floor.stream_seq;
  let moved = 0;
  for (let seq = si.state.first_seq; si.state.messages > 0 && seq <= floor;) {
    // The next message at or after seq (acked ones are gone from a work queue).
    // (nats-server takes next_by_subj on this API since 2.9; the client's type leaves it out)
    const m = await jsm.streams.getMessage(stream, { seq, next_by_subj: s.work(stage.name) } as unknown as MsgRequest).catch(() => null);
    if (m === null || m.seq > floor) break;
    let envelope: Envelope<unknown> | null = null;
    try {
      const value = decode(m.data, stage.maxMessageSize);
      if (!Array.isArray(value)) envelope = parseEnvelope(value);
    } catch { /* kept as bytes */ }
    const attempts = stage.maxAttempts + 1;
    const letter: DeadLetter = {
      pipeline, stage: stage.name, key: envelope?.key ?? null, attempts, ts: Date.now(), envelope, data: m.data,
      error: toWire(new TroupeError(codes.RETRYABLE,
        `delivered ${attempts} times, each time to a replica that stopped before settling it: the server delivers it no more`)),
    };
    await js.publish(s.dead(stage.name), encode(letter), { msgID: deadLetterId(stage.name, m.seq) });
    await jsm.streams.deleteMessage(stream, m.seq, false);
    moved++;
    seq = m.seq + 1;
  }
  return moved;
}
