// Imported first by the CLI: Node's on-disk compile cache for this thread and, through the
// environment that worker threads inherit, for every replica thread. Each replica thread
// compiles the same modules (MikroORM, the NATS client, the pipeline) again; with the cache the
// flagship example's re-run took 3.6-4.8 s instead of 4.3-5.8 s. NODE_DISABLE_COMPILE_CACHE=1
// turns it off; NODE_COMPILE_CACHE picks the folder (default: node-compile-cache in the
// system's temp folder), and Node has then turned it on for every thread by itself.
import { constants, enableCompileCache } from 'node:module';

if (process.env.NODE_COMPILE_CACHE === undefined) {
  const { status, directory } = enableCompileCache();
  // The base folder, as NODE_COMPILE_CACHE takes it (Node adds a folder per version).
  if (status === constants.compileCacheStatus.ENABLED && directory) process.env.NODE_COMPILE_CACHE = directory;
}
