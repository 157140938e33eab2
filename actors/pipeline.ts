import type { EntitySchema } from '@mikro-orm/core';
import { availableParallelism } from 'node:os';
import type { FetchRequest, FetchResponse } from './fetcher/http.ts';
import type { EntityManager } from '@mikro-orm/sqlite';
import { codes, TroupeError, checkName, type StageLimits } from '../messages/mod.ts';

/** The five roles. */
export type Role = 'scanner' | 'fetcher' | 'generator' | 'writer' | 'exporter';
export const ROLES: readonly Role[] = ['scanner', 'fetcher', 'generator', 'writer', 'exporter'];

/** Prefix of the keys of checkpoint commands (sent by the Scanner, applied by the Writer). */
export const CHECKPOINT_KEY = '__troupe_checkpoint__/';

/** The work stage (subject token) each consuming role reads. The Scanner reads its source. */
export const STAGE_OF = { fetcher: 'fetch', generator: 'generate', writer: 'write', exporter: 'export' } as const;
export type Stage = (typeof STAGE_OF)[keyof typeof STAGE_OF];

/** One unit of work: a stable key and a msgpack-able body. */
export interface Item<B> {
  key: string;
  body: B;
}

/** What every handler can see about the job it runs in. */
export interface JobContext {
  readonly pipeline: string;
  /** The pipeline's own parameters, from the command line (`--url X` → `{url: 'X'}`). */
  readonly params: Readonly<Record<string, string>>;
  /** Output folder: the Writer's sandbox root; the database lives in it. */
  readonly out: string;
  /** Identity of this run of the job (changes on every `troupe start`). */
  readonly run: string;
  /** Aborted when the replica must stop at once. */
  readonly signal: AbortSignal;
  log(message: string): void;
}

/** Read-only access to the job's database, for Scanners and Exporters. */
export interface ReadContext extends JobContext {
  /** Runs a read-only SQL query on the job's database. */
  query<R = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<R[]>;
}

export interface ScanContext extends ReadContext {
  /** The cursor of the last checkpointed page, undefined on a fresh job. */
  readonly cursor: unknown;
}

/**
 * A page of source items and the cursor after it. The cursor is checkpointed (through the
 * Writer) once every item of the page is durably queued. A page with no items means
 * "nothing right now": the Scanner finishes when the whole pipeline is idle, else asks again.
 */
export interface ScanPage<S> {
  items: Array<Item<S>>;
  cursor?: unknown;
}

export interface ScannerSpec<S> {
  scan(ctx: ScanContext): AsyncIterable<ScanPage<S>>;
}

export type { FetchRequest };

/** A response as it reaches the Generator (the Fetcher's, without its timing). */
export type FetchedResponse = Omit<FetchResponse, 'attempts' | 'ms'>;

/**
 * What a Generator receives from a Fetcher: the item and its response, or — when the
 * Fetcher passes permanent failures on (`permanentErrors: 'pass'`) — the error instead.
 */
export interface Fetched<S> {
  item: S;
  response?: FetchedResponse;
  error?: { code: string; message: string; status?: number };
}

export interface FetcherSpec<S> {
  /** Builds the request for an item. */
  request(item: Item<S>, ctx: JobContext): FetchRequest | Promise<FetchRequest>;
  /** Shared request headers, obtained once per replica and refreshed on 401/403. */
  headers?: () => Promise<Record<string, string>>;
  /**
   * HTTP engine options (pool size, rate limits, timeouts, retry caps; see
   * actors/fetcher/options.ts), or a function of the pipeline's parameters returning them.
   */
  http?: Record<string, unknown> | ((params: Readonly<Record<string, string>>) => Record<string, unknown>);
  /**
   * What happens to a permanent failure (a 404, retries exhausted): `dead-letter` it, or
   * `pass` it to the next stage as `Fetched.error` (e.g. to report broken links).
   * @default 'dead-letter'
   */
  permanentErrors?: 'dead-letter' | 'pass';
}

export interface GeneratorSpec<G, W> {
  /**
   * Derives write commands from one input. Runs on the replica's worker thread; up to
   * `roles.generator.maxInFlight` inputs overlap per replica (for async work such as a remote
   * model API), and each replica is a thread of its own (for CPU work).
   */
  generate(input: Item<G>, ctx: JobContext): Array<Item<W>> | Promise<Array<Item<W>>>;
}

/** What the Writer's `apply` gets: the transaction, the file sandbox and follow-up emission. */
export interface WriteTx extends JobContext {
  /** Entity manager bound to the open transaction. */
  readonly em: EntityManager;
  /** Files under the output folder, written atomically (temp file, fsync, rename). */
  readonly files: {
    write(path: string, content: string | Uint8Array): Promise<void>;
    remove(path: string): Promise<void>;
  };
  /** Publishes an item to a stage after the transaction commits (before the batch is acked). */
  emit(stage: Stage, key: string, body: unknown): void;
}

export interface WriterSpec<W> {
  /** The pipeline's entities (`defineEntity`), created or updated at start. */
  entities: EntitySchema<any, any>[];
  /** Applies a batch of commands inside one transaction; must be idempotent by key. */
  apply(batch: Array<Item<W>>, tx: WriteTx): Promise<void>;
}

export interface ExporterSpec<E, W> {
  /** Handles an item the Writer emitted to the `export` stage. */
  export?(item: Item<E>, ctx: ReadContext): Array<Item<W>> | Promise<Array<Item<W>>>;
  /** Runs once when the job has no work left; what it yields goes through the Writer. */
  finish?(ctx: ReadContext): AsyncIterable<Item<W>>;
}

/** Per-role knobs: replicas and in-flight bound, plus the stage's stream limits. */
export interface RoleOptions extends StageLimits {
  /** Replicas (worker threads) started by `troupe start`. */
  replicas?: number;
  /** Messages one replica holds at once. */
  maxInFlight?: number;
  /** Writer only: commands per transaction. @default 500 */
  batchSize?: number;
  /** Writer only: longest wait for a batch to fill, ms. @default 20 */
  batchWaitMs?: number;
  /**
   * Generator only: replicas beyond this machine's cores stand by, taking work only while
   * the machine has idle CPU (see actors/standby.ts). Set false when `generate` blocks its
   * thread without using CPU (a synchronous child process, say) and every thread should
   * take work at once. @default true
   */
  standby?: boolean;
}

export interface ParamSpec {
  description: string;
  default?: string;
  /** Refuse to start without a value (given or default). @default false */
  required?: boolean;
  /**
   * Checks the value before any replica starts (in `troupe start` and `troupe worker`):
   * returns what is wrong with it, naming the option (`--root /x is not a directory`), or
   * undefined. A bad value then stops the command at once with exit 1.
   */
  check?: (value: string) => string | undefined;
}

export interface PipelineDefinition<S = any, G = any, W = any, E = any> {
  /** Pipeline name: subject token and stream-name part. */
  name: string;
  /** Parameters the pipeline accepts on the command line. */
  params?: Record<string, ParamSpec>;
  scanner: ScannerSpec<S>;
  fetcher?: FetcherSpec<S>;
  generator?: GeneratorSpec<G, W>;
  writer: WriterSpec<W>;
  exporter?: ExporterSpec<E, W>;
  /** Options per role. */
  roles?: Partial<Record<Role, RoleOptions>>;
  /** Supervisor restart intensity: at most `maxRestarts` within `withinMs`. @default 5 in 10 s */
  restarts?: { maxRestarts?: number; withinMs?: number };
}

/**
 * Declares a pipeline. Types flow through it: what the Scanner yields is what the Fetcher's
 * `request` receives; a Fetcher's response reaches the Generator as `Fetched<S>`; what the
 * Generator returns is what the Writer's `apply` receives.
 */
export function definePipeline<S, W, E = unknown>(def: PipelineDefinition<S, Fetched<S>, W, E> & { fetcher: FetcherSpec<S> }): PipelineDefinition<S, Fetched<S>, W, E>;
export function definePipeline<S, W, E = unknown>(def: PipelineDefinition<S, S, W, E> & { fetcher?: undefined }): PipelineDefinition<S, S, W, E>;
export function definePipeline(def: PipelineDefinition): PipelineDefinition {
  return validatePipeline(def);
}

/** The roles a pipeline runs, in flow order. */
export function rolesOf(def: PipelineDefinition): Role[] {
  return ROLES.filter((r) => def[r] !== undefined);
}

/** The stage an item goes to after `role` (for the Scanner: the first consuming stage). */
export function nextStage(def: PipelineDefinition, role: 'scanner' | 'fetcher' | 'generator' | 'exporter'): Stage {
  if (role === 'exporter') return 'write';
  const after: Role[] = role === 'scanner' ? ['fetcher', 'generator', 'writer'] : role === 'fetcher' ? ['generator', 'writer'] : ['writer'];
  const r = after.find((x) => def[x] !== undefined) as Exclude<Role, 'scanner'>;
  return STAGE_OF[r];
}

// Generators default to one thread per core: CPU work is what they are for.
const DEFAULT_REPLICAS: Record<Role, number> = { scanner: 1, fetcher: 1, generator: availableParallelism(), writer: 1, exporter: 1 };
const DEFAULT_IN_FLIGHT: Record<Role, number> = { scanner: 1, fetcher: 64, generator: 4, writer: 1000, exporter: 16 };

export function replicasOf(def: PipelineDefinition, role: Role): number {
  return def.roles?.[role]?.replicas ?? DEFAULT_REPLICAS[role];
}

export function maxInFlightOf(def: PipelineDefinition, role: Role): number {
  return def.roles?.[role]?.maxInFlight ?? DEFAULT_IN_FLIGHT[role];
}

function bad(message: string): TroupeError {
  return new TroupeError(codes.BAD_OPTION, message);
}

function positiveInt(v: unknown, name: string): void {
  if (v !== undefined && (!Number.isSafeInteger(v) || (v as number) <= 0)) throw bad(`${name} must be a positive integer (got ${JSON.stringify(v)})`);
}

/** Checks a definition's shape and options; every message names the option. */
export function validatePipeline(def: PipelineDefinition): PipelineDefinition {
  if (typeof def !== 'object' || def === null) throw bad('a pipeline definition must be an object');
  checkName('pipeline.name', def.name);
  if (typeof def.scanner?.scan !== 'function') throw bad('pipeline.scanner.scan must be a function');
  if (typeof def.writer?.apply !== 'function') throw bad('pipeline.writer.apply must be a function');
  if (!Array.isArray(def.writer.entities)) throw bad('pipeline.writer.entities must be an array of entities');
  if (def.fetcher && typeof def.fetcher.request !== 'function') throw bad('pipeline.fetcher.request must be a function');
  if (def.generator && typeof def.generator.generate !== 'function') throw bad('pipeline.generator.generate must be a function');
  if (def.exporter && !def.exporter.export && !def.exporter.finish) throw bad('pipeline.exporter needs export or finish');
  for (const [role, o] of Object.entries(def.roles ?? {})) {
    if (!ROLES.includes(role as Role)) throw bad(`pipeline.roles.${role} is not a role (roles: ${ROLES.join(', ')})`);
    if (def[role as Role] === undefined) throw bad(`pipeline.roles.${role} configures a role the pipeline does not define`);
    for (const k of ['replicas', 'maxInFlight', 'batchSize', 'batchWaitMs'] as const) positiveInt(o?.[k], `pipeline.roles.${role}.${k}`);
    if (o?.standby !== undefined && (role !== 'generator' || typeof o.standby !== 'boolean')) {
      throw bad(`pipeline.roles.${role}.standby: ${role === 'generator' ? `must be true or false (got ${JSON.stringify(o.standby)})` : 'only a Generator has standby replicas'}`);
    }
  }
  if ((def.roles?.writer?.replicas ?? 1) !== 1) throw bad('pipeline.roles.writer.replicas must be 1: a pipeline has exactly one Writer');
  if ((def.roles?.scanner?.replicas ?? 1) !== 1) throw bad('pipeline.roles.scanner.replicas must be 1');
  for (const [k, spec] of Object.entries(def.params ?? {})) {
    if (spec?.check !== undefined && typeof spec.check !== 'function') throw bad(`pipeline.params.${k}.check must be a function`);
  }
  positiveInt(def.restarts?.maxRestarts, 'pipeline.restarts.maxRestarts');
  positiveInt(def.restarts?.withinMs, 'pipeline.restarts.withinMs');
  return def;
}
