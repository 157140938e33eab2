#!/usr/bin/env -S node --max-semi-space-size=8 --heap-growing-percent=50
// (the flags: see actors/memory.ts)
// troupe runs TypeScript through Node 24's type stripping; older Node cannot load it.
const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  console.error(`troupe needs Node 24 or newer (this is ${process.version}); run it through npx or npm run.`);
  process.exit(1);
}
// Before cli.ts, so that the modules cli.ts imports are cached too (see compile-cache.ts).
await import('../compile-cache.ts');
await import('../cli.ts');
