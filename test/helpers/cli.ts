import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The repository root (where cli.ts lives). */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface CliRun {
  child: ChildProcess;
  /** Everything written to stdout / stderr so far. */
  readonly stdout: string;
  readonly stderr: string;
  /** Resolves with the exit code (or the signal name). */
  exited: Promise<number | string>;
}

/** Runs `troupe <args>` (cli.ts on this Node) as a child process. */
export function troupe(args: string[], env: Record<string, string> = {}): CliRun {
  const child = spawn(process.execPath, ['cli.ts', ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => { stdout += d; });
  child.stderr!.on('data', (d) => { stderr += d; });
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  return { child, get stdout() { return stdout; }, get stderr() { return stderr; }, exited };
}
