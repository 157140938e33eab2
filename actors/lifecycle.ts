/** The states every long-lived troupe thing goes through, in order. */
export type ActorState = 'starting' | 'running' | 'draining' | 'stopped' | 'failed';

const next: Record<ActorState, readonly ActorState[]> = {
  starting: ['running', 'draining', 'stopped', 'failed'],
  running: ['draining', 'stopped', 'failed'],
  draining: ['stopped', 'failed'],
  stopped: [],
  failed: [],
};

/**
 * One lifecycle shared by every actor: `starting → running → draining → stopped | failed`,
 * with `drain()` (graceful), `close()` (now), a `closed` promise that resolves — never
 * rejects — with the error that ended it (or undefined), and async dispose safe to call twice.
 * Subclasses implement `onStart`, `onDrain` and `onClose`.
 */
export abstract class Lifecycle {
  readonly name: string;
  #state: ActorState = 'starting';
  #resolveClosed!: (err: Error | undefined) => void;
  readonly closed: Promise<Error | undefined> = new Promise((r) => { this.#resolveClosed = r; });
  #draining: Promise<void> | undefined;
  /** Called on every state change (for logs and status). */
  onState: ((state: ActorState, name: string, err?: Error) => void) | undefined;

  constructor(name: string) {
    this.name = name;
  }

  get state(): ActorState {
    return this.#state;
  }

  protected abstract onStart(): Promise<void>;
  /** Stop taking new work and finish what is held. */
  protected abstract onDrain(): Promise<void>;
  /** Release resources now. */
  protected abstract onClose(): Promise<void>;

  /** Starts the actor; a failure moves it to `failed` and rejects. */
  async start(): Promise<void> {
    try {
      await this.onStart();
      if (this.#state === 'starting') this.#to('running');
    } catch (err) {
      await this.fail(err as Error);
      throw err;
    }
  }

  /** Finishes held work, then closes. Safe to call more than once. */
  drain(): Promise<void> {
    if (this.#state === 'stopped' || this.#state === 'failed') return Promise.resolve();
    this.#draining ??= (async () => {
      this.#to('draining');
      try {
        await this.onDrain();
        await this.onClose();
        this.#to('stopped');
        this.#resolveClosed(undefined);
      } catch (err) {
        await this.fail(err as Error);
      }
    })();
    return this.#draining;
  }

  /** Stops at once; held work is left to be redelivered. Safe to call more than once. */
  async close(): Promise<void> {
    if (this.#state === 'stopped' || this.#state === 'failed') return;
    await this.onClose().catch(() => undefined);
    if ((this.#state as ActorState) !== 'failed') {
      this.#to('stopped');
      this.#resolveClosed(undefined);
    }
  }

  /** Moves to `failed` with the error that ended the actor. */
  protected async fail(err: Error): Promise<void> {
    if (this.#state === 'stopped' || this.#state === 'failed') return;
    this.#to('failed', err);
    await this.onClose().catch(() => undefined);
    this.#resolveClosed(err);
  }

  #to(state: ActorState, err?: Error): void {
    if (!next[this.#state].includes(state)) return;
    this.#state = state;
    this.onState?.(state, this.name, err);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
