/**
 * `strata serve`: keeps repositories for clients over HTTP(S). The server
 * stores sealed objects and never holds a key; see src/server/.
 */
import * as fs from 'node:fs';
import type { Command } from 'commander';
import { usageError } from '../../errors.js';
import { CHECKPOINT_EVERY, DEFAULTS, isLoopback, startServer } from '../../server/serve.js';
import { locate } from '../../storage/location.js';
import { globals, repoPath, serverDir } from '../context.js';

interface ServeFlags {
  listen: string;
  tlsCert?: string;
  tlsKey?: string;
  insecureListen?: boolean;
  headersTimeout?: string;
  idleTimeout?: string;
  drainTimeout?: string;
  checkpointEvery?: string;
}

export function register(program: Command): void {
  program
    .command('serve')
    .description('serve the repository (a directory, or s3://BUCKET/PREFIX) to strata clients over HTTP(S)')
    .option('--listen <host:port>', 'address to listen on (port 0 picks a free port)', '127.0.0.1:8733')
    .option('--tls-cert <file>', 'serve HTTPS with this certificate (PEM; needs --tls-key)')
    .option('--tls-key <file>', 'private key of --tls-cert (PEM)')
    .option('--insecure-listen', 'allow plain HTTP on an address other than loopback')
    .option('--headers-timeout <seconds>', `time allowed for a request's headers (default ${DEFAULTS.headersTimeoutMs / 1000})`)
    .option('--idle-timeout <seconds>', `close connections silent this long (default ${DEFAULTS.idleTimeoutMs / 1000})`)
    .option('--drain-timeout <seconds>', `on SIGTERM/SIGINT, wait this long for requests in flight (default ${DEFAULTS.drainTimeoutMs / 1000})`)
    .option('--checkpoint-every <records>', `over a bucket: write a checkpoint of the catalog every this many journal records, and remove the records it makes needless (0: never; default ${CHECKPOINT_EVERY})`)
    .action(async (opts: ServeFlags, cmd: Command) => {
      const g = globals(cmd);
      const dir = serverDir(g);
      const where = locate(repoPath(g));
      const every = opts.checkpointEvery === undefined ? undefined : Number(opts.checkpointEvery);
      if (every !== undefined && (!/^\d{1,9}$/.test(opts.checkpointEvery!) || !Number.isSafeInteger(every))) throw usageError('--checkpoint-every must be a whole number of records');
      const bucket =
        where.kind === 's3'
          ? { bucket: where.bucket, prefix: where.prefix, ...(g.s3Endpoint ? { s3: { endpoint: g.s3Endpoint } } : {}), ...(every !== undefined ? { checkpointEvery: every } : {}) }
          : undefined;
      const { host, port } = parseListen(opts.listen);
      if (!!opts.tlsCert !== !!opts.tlsKey) throw usageError('--tls-cert and --tls-key go together');
      const tls = opts.tlsCert && opts.tlsKey ? { cert: readPem(opts.tlsCert, '--tls-cert'), key: readPem(opts.tlsKey, '--tls-key') } : undefined;
      if (!tls && !isLoopback(host) && !opts.insecureListen) {
        throw usageError(`refusing plain HTTP on ${host}: tokens would cross the network in clear; use --tls-cert/--tls-key, or --insecure-listen behind a TLS proxy`);
      }
      const running = await startServer({
        dir,
        ...(bucket ? { bucket } : {}),
        host,
        port,
        tls,
        log: { quiet: !!g.quiet },
        headersTimeoutMs: seconds(opts.headersTimeout, '--headers-timeout') ?? DEFAULTS.headersTimeoutMs,
        idleTimeoutMs: seconds(opts.idleTimeout, '--idle-timeout') ?? DEFAULTS.idleTimeoutMs,
        drainTimeoutMs: seconds(opts.drainTimeout, '--drain-timeout') ?? DEFAULTS.drainTimeoutMs,
      }).catch((e: unknown) => {
        if ((e as NodeJS.ErrnoException).code === 'ERR_OSSL_PEM_NO_START_LINE' || /PEM|key values mismatch|certificate/i.test((e as Error).message)) {
          throw usageError(`cannot use the TLS certificate and key: ${(e as Error).message}`);
        }
        throw e;
      });
      await new Promise<void>((resolve) => {
        const stop = (signal: string) => {
          process.off('SIGTERM', onTerm);
          process.off('SIGINT', onInt);
          process.stderr.write(`${signal}: finishing requests in flight, accepting no more\n`);
          void running.shutdown().then((cut) => {
            if (cut > 0) process.stderr.write(`stopped; ${cut} connection(s) still busy were cut off\n`);
            resolve();
          });
        };
        const onTerm = () => stop('SIGTERM');
        const onInt = () => stop('SIGINT');
        process.on('SIGTERM', onTerm);
        process.on('SIGINT', onInt);
        // Announced only once a signal is handled: whoever reads this line may send one at once.
        process.stdout.write(g.json ? JSON.stringify({ listening: running.url }) + '\n' : `listening on ${running.url}\n`);
      });
    });
}

export function parseListen(text: string): { host: string; port: number } {
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$/.exec(text) ?? /^([^:[\]]+):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw usageError(`--listen must be HOST:PORT (e.g. 127.0.0.1:8733 or [::1]:8733), not ${JSON.stringify(text)}`);
  return { host: m[1]!, port };
}

function readPem(file: string, option: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw usageError(`cannot read ${option} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

function seconds(text: string | undefined, option: string): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text) || n <= 0 || n > 86_400) throw usageError(`${option} must be a number of seconds (up to 86400)`);
  return Math.round(n * 1000);
}
