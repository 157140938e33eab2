/**
 * V8's young generation grows its semi-spaces up to 32 MiB or more under a steady stream of
 * short-lived objects (decoded messages), and keeps the pages: a no-op five-stage pipeline
 * went from 185 MiB RSS at 10k items to 290 MiB at 60k with a flat post-GC heap. Capped at
 * 8 MiB per semi-space, its RSS stays within a few MiB of where it started, at the same
 * items/s (measured: 7.6k/s against 7.0k/s uncapped; 4 MiB cost 10%, 2 MiB 30%).
 *
 * The old generation is the other half. After each major GC, V8 lets it grow to several
 * times what survived before collecting again; with `--heap-growing-percent=50` it grows by
 * half. The same pipeline's peak RSS went from 168 MiB at 10k items and 204 MiB at 100k to
 * 139 and 147 MiB, at 3% fewer items/s (3 interleaved triples of runs at 30k items: 9,970
 * against 10,305/s; README, "What the floors are made of").
 *
 * The `troupe` command and the npm scripts start Node with {@link NODE_FLAGS} (a test keeps
 * them in step); the semi-space cap reaches replica threads through `resourceLimits` (see
 * thread-handle.ts), V8's heap-growing factor is one for the whole process.
 */
export const SEMI_SPACE_MB = 8;

/** Node flags for a process that runs troupe. */
export const NODE_FLAGS: readonly string[] = [`--max-semi-space-size=${SEMI_SPACE_MB}`, '--heap-growing-percent=50'];

/** `resourceLimits` for a replica thread: a young generation of three semi-spaces. */
export const THREAD_LIMITS = Object.freeze({ maxYoungGenerationSizeMb: 3 * SEMI_SPACE_MB });
