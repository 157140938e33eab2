// The `troupe` command line: start, worker, status, tap, dead.
import './compile-cache.ts';
import { Command, Option } from 'commander';
import { formatSummary, parseReplicas, Supervisor } from './supervisor.ts';
import { TroupeError } from './messages/mod.ts';
import { deadCommand, statusCommand, tapCommand } from './actors/monitor.ts';

const program = new Command('troupe')
  .description('Actor-model runtime for long, multi-stage data jobs over NATS JetStream')
  .showHelpAfterError();

/** The pipeline's own options (`--url X`, `--url=X`); the supervisor checks them against its params. */
function pipelineParams(args: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const m = /^--([A-Za-z][\w-]*)(?:=(.*))?$/s.exec(arg);
    if (!m) throw new TroupeError('TROUPE_BAD_OPTION', `unexpected argument: ${arg}`);
    const value = m[2] ?? args[++i];
    if (value === undefined || (m[2] === undefined && value.startsWith('--'))) throw new TroupeError('TROUPE_BAD_OPTION', `option --${m[1]} needs a value`);
    out[m[1]!] = value;
  }
  return out;
}

async function runSupervisor(mode: 'start' | 'worker', pipeline: string, opts: Record<string, string | undefined>, extra: string[]): Promise<void> {
  const sup = new Supervisor({
    pipelinePath: pipeline, mode,
    natsUrl: opts.nats ?? process.env.TROUPE_NATS_URL,
    out: opts.out, stateDir: opts.state,
    replicas: opts.replicas ? parseReplicas(opts.replicas) : {},
    params: pipelineParams(extra),
    graceMs: opts.grace ? Number(opts.grace) : 30_000,
    progress: (opts.progress ?? 'auto') as 'auto',
  });
  const summary = await sup.run();
  console.error(formatSummary(summary));
  process.exitCode = summary.ok ? 0 : 1;
}

const natsOption = new Option('--nats <url>', 'NATS server URL (default: $TROUPE_NATS_URL, else an embedded nats-server)');

program.command('start')
  .description('run a pipeline to the end: topology, replicas, supervision, progress')
  .argument('<pipeline>', 'pipeline module (.ts) whose default export is definePipeline(...)')
  .addOption(natsOption)
  .option('--out <dir>', 'output folder: files and the SQLite database (default: out/<pipeline>)')
  .option('--state <dir>', 'state folder for the embedded nats-server (default: <out>/.troupe)')
  .option('--replicas <spec>', 'replicas per stage, e.g. fetch=8,generate=2')
  .option('--grace <ms>', 'how long a graceful stop may take', '30000')
  .addOption(new Option('--progress <mode>', 'progress display').choices(['auto', 'tty', 'plain', 'none']).default('auto'))
  .allowUnknownOption()
  .allowExcessArguments()
  .addHelpText('after', '\nOptions the pipeline declares (e.g. --url for site-notes) follow the pipeline path.')
  .action(async (pipeline: string, opts: Record<string, string>, cmd: Command) => {
    await runSupervisor('start', pipeline, opts, cmd.args.slice(1));
  });

program.command('worker')
  .description('join a running pipeline from this process or machine with replicas of some roles')
  .argument('<pipeline>', 'the same pipeline module the supervisor runs')
  .addOption(natsOption)
  .requiredOption('--replicas <spec>', 'replicas to run here, e.g. fetch=4,generate=2 (never the Writer)')
  .option('--out <dir>', 'output folder (as given to troupe start)')
  .addOption(new Option('--progress <mode>', 'progress display').choices(['auto', 'tty', 'plain', 'none']).default('auto'))
  .allowUnknownOption()
  .allowExcessArguments()
  .action(async (pipeline: string, opts: Record<string, string>, cmd: Command) => {
    await runSupervisor('worker', pipeline, opts, cmd.args.slice(1));
  });

program.command('status')
  .description('per-stage queued / in flight / done / failed / dead, the Writer lease and recent replicas')
  .argument('<pipeline>', 'pipeline name')
  .addOption(natsOption)
  .option('--out <dir>', 'output folder of a job on an embedded server (finds its URL)')
  .option('--json', 'print JSON')
  .action(statusCommand);

program.command('tap')
  .description('print live traffic of a pipeline, decoded from msgpack')
  .argument('<pipeline>', 'pipeline name')
  .argument('[stage]', 'only this stage')
  .addOption(natsOption)
  .option('--out <dir>', 'output folder of a job on an embedded server (finds its URL)')
  .option('--count <n>', 'stop after n messages')
  .action(tapCommand);

program.command('dead')
  .description('list, show and replay dead letters')
  .argument('<pipeline>', 'pipeline name')
  .argument('[action]', 'list | show | replay', 'list')
  .argument('[seq]', 'dead-letter sequence number (show, replay), or "all" (replay)')
  .addOption(natsOption)
  .option('--out <dir>', 'output folder of a job on an embedded server (finds its URL)')
  .option('--json', 'print JSON')
  .action(deadCommand);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  const e = err as TroupeError;
  console.error(`troupe: ${e.code ? `${e.code}: ` : ''}${e.message}`);
  process.exitCode = 1;
}
