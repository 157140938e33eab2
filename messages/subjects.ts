import { createHash } from 'node:crypto';
import { codes, TroupeError } from './errors.ts';

const NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** Refuses a pipeline or stage name that cannot be a subject token and a stream name. */
export function checkName(what: string, name: string): string {
  if (typeof name !== 'string' || !NAME.test(name)) {
    throw new TroupeError(codes.BAD_NAME, `${what} ${JSON.stringify(name)} must be 1-64 letters, digits, '_' or '-'`);
  }
  return name;
}

/** Subject names of one pipeline `P` (see DESIGN.md "Subjects"). */
export interface Subjects {
  readonly pipeline: string;
  /** Everything of this pipeline: `troupe.P.>` */
  readonly all: string;
  work(stage: string): string;
  dead(stage: string): string;
  events(stage: string, kind: string): string;
  control(verb: string): string;
  /** JetStream stream holding a stage's work. */
  workStream(stage: string): string;
  /** JetStream stream holding a stage's dead letters. */
  deadStream(): string;
  /** Durable consumer name of a stage. */
  consumer(stage: string): string;
}

export function subjects(pipeline: string): Subjects {
  checkName('pipeline', pipeline);
  const p = `troupe.${pipeline}`;
  return {
    pipeline,
    all: `${p}.>`,
    work: (stage) => `${p}.work.${checkName('stage', stage)}`,
    dead: (stage) => `${p}.dead.${checkName('stage', stage)}`,
    events: (stage, kind) => `${p}.events.${checkName('stage', stage)}.${checkName('event kind', kind)}`,
    control: (verb) => `${p}.control.${checkName('control verb', verb)}`,
    workStream: (stage) => `TROUPE_${pipeline}_WORK_${checkName('stage', stage)}`,
    deadStream: () => `TROUPE_${pipeline}_DEAD`,
    consumer: (stage) => `troupe-${checkName('stage', stage)}`,
  };
}

/**
 * JetStream message id of an item: derived from stage and key, so a re-published item is
 * stored once inside the stream's duplicate window. 22 base64url characters (132 bits of a
 * SHA-256): every envelope carries it and the Writer stores it in each ledger row. It was the
 * stage, a colon and 32 characters; with 16 fewer bytes the Writer actor's thread used 5% less
 * CPU per row and nats-server 20% less (9 interleaved pairs of 100k rows).
 */
export function messageId(stage: string, key: string): string {
  return createHash('sha256').update(stage).update('\u0000').update(key).digest('base64url').slice(0, 22);
}

/** JetStream message id of a frame: derived from its items' ids, so the same frame re-sent is stored once. */
export function frameId(ids: readonly string[]): string {
  return `frame:${createHash('sha256').update(ids.join('\n')).digest('base64url').slice(0, 32)}`;
}

/**
 * JetStream message id of the dead letter for message `seq` of a stage (and, for an item of a
 * frame, that item's id): the consumer and `deadLetterStranded` both use it, so a message
 * dead-lettered by both is stored once.
 */
export function deadLetterId(stage: string, seq: number, itemId?: string): string {
  return `dead:${stage}:${seq}${itemId === undefined ? '' : `:${itemId}`}`;
}
