/**
 * V8's young generation grows its semi-spaces up to 32 MiB or more under a steady stream of
 * short-lived objects (decoded messages), and keeps the pages: a no-op five-stage pipeline
 * went from 185 MiB RSS at 10k items to 290 MiB at 60k with a flat post-GC heap. Capped at
 * 8 MiB per semi-space, its RSS stays within a few MiB of where it started, at the same
 * items/s (measured: 7.6k/s against 7.0k/s uncapped; 4 MiB cost 10%, 2 MiB 30%).
 *
 * The `troupe` command and the npm scripts start Node with {@link NODE_FLAGS}; replica
 * threads get the same cap through `resourceLimits` (see thread-handle.ts).
 */
export const SEMI_SPACE_MB = 8;

/** Node flags for a process that runs troupe. */
export const NODE_FLAGS: readonly string[] = [`--max-semi-space-size=${SEMI_SPACE_MB}`];

/** `resourceLimits` for a replica thread: a young generation of three semi-spaces. */
export const THREAD_LIMITS = Object.freeze({ maxYoungGenerationSizeMb: 3 * SEMI_SPACE_MB });
