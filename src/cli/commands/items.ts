/**
 * strata items, item and sql: what is inside one backed-up dataset (an
 * mbox, a zip or tar archive, a SQLite database), reading only the ranges
 * it needs (src/items/). Each says with --json, and with --stats on stderr,
 * how many bytes it fetched of how many.
 */
import * as fs from 'node:fs';
import type { Command } from 'commander';
import { absolutePath, DATASET_TYPES, SnapshotTree, type DatasetEntry, type DatasetType } from '../../engine/snapshot-tree.js';
import { usageError } from '../../errors.js';
import { Dataset, ITEM_TYPES } from '../../items/dataset.js';
import type { SqlValue } from '../../items/sqlite.js';
import type { Repository } from '../../repo/repository.js';
import { displayName } from '../../util/names.js';
import { formatBytes } from '../../util/size.js';
import { parseWhen } from '../../util/when.js';
import { globals, openRepo } from '../context.js';
import { line, lines, printJson, Progress, table, wantsProgress } from '../output.js';

const AT = ['--at <when>', 'latest, a snapshot id or prefix, or an ISO 8601 date/time', 'latest'] as const;
const STATS = ['--stats', 'print the bytes fetched and the dataset size on stderr'] as const;
/** An item larger than this is written with -o, not into a JSON document. */
const JSON_DATA_LIMIT = 64 * 1024 * 1024;

export function register(program: Command): void {
  registerManifest(program);
  program
    .command('items')
    .description('list the items of a dataset: messages of an mbox, entries of a zip or tar, tables of a SQLite database, partitions of a disk image')
    .argument('<path>', 'the dataset (absolute, or relative to the current directory)')
    .option(...AT)
    .option('--match <text>', 'only items whose name, subject, sender or Message-ID contains TEXT (any case)')
    .option('--path <inner>', 'only entries of an archive under this directory; in a disk image, the directory pN:/DIR of partition N')
    .option('--count', 'for a SQLite database: count the rows of each table (reads the tables)')
    .option(...STATS)
    .action(async (p: string, opts: { at: string; match?: string; path?: string; count?: boolean; stats?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const when = parseWhen(opts.at);
      await withDataset(cmd, p, when, async (repo, ds, done) => {
        const items = await ds.items({ match: opts.match, inner: opts.path, count: opts.count });
        done();
        report(repo, ds, opts.stats);
        if (g.json) return printJson({ ...summary(repo, ds), items });
        lines(textRows(ds.type!, items));
      }, { progress: true });
    });

  program
    .command('item')
    .description("write one item of a dataset: a message of an mbox (by number or Message-ID, as RFC 822), an archive entry's bytes, a file of a disk image (pN:/PATH)")
    .argument('<path>', 'the dataset (absolute, or relative to the current directory)')
    .argument('<item>', 'a message number (1 for the first) or Message-ID, an entry name, or pN:/PATH in a disk image (/PATH with one file system)')
    .option(...AT)
    .option('-o, --output <file>', 'write to FILE instead of stdout (made only once the item is read whole and checked)')
    .option(...STATS)
    .action(async (p: string, item: string, opts: { at: string; output?: string; stats?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const when = parseWhen(opts.at);
      await withDataset(cmd, p, when, async (repo, ds, done) => {
        const it = await ds.item(item);
        if (g.json && !opts.output && (it.size ?? 0) > JSON_DATA_LIMIT) throw usageError(`${it.name} is too large for --json (${it.size} bytes); add --output FILE`);
        let length = 0;
        const chunks: Buffer[] = [];
        if (opts.output) {
          // A damaged entry shows only at its end (a zip's CRC): FILE appears only when all of it checked.
          const partial = `${opts.output}.strata-partial`;
          const out = fs.createWriteStream(partial);
          try {
            for await (const piece of it.bytes) {
              length += piece.length;
              if (!out.write(piece)) await new Promise<void>((r) => out.once('drain', () => r()));
            }
            await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())));
            fs.renameSync(partial, opts.output);
          } catch (e) {
            out.destroy();
            fs.rmSync(partial, { force: true });
            throw e;
          }
        } else {
          for await (const piece of it.bytes) {
            length += piece.length;
            if (g.json) {
              if (length > JSON_DATA_LIMIT) throw usageError(`${it.name} is too large for --json; add --output FILE`);
              chunks.push(Buffer.from(piece));
            } else if (!process.stdout.write(piece)) await new Promise<void>((r) => process.stdout.once('drain', () => r()));
          }
        }
        done();
        report(repo, ds, opts.stats);
        if (g.json) printJson({ ...summary(repo, ds), item: it.name, length, ...(opts.output ? { output: opts.output } : { data: Buffer.concat(chunks).toString('base64') }) });
      }, { progress: opts.output !== undefined || !process.stdout.isTTY });
    });

  program
    .command('sql')
    .description('run a read-only SQL query on a backed-up SQLite database, reading only the pages it touches')
    .argument('<path>', 'the database (absolute, or relative to the current directory)')
    .argument('<query>', 'SQL (read-only: SELECT, PRAGMA that reads, EXPLAIN)')
    .option(...AT)
    .option(...STATS)
    .action(async (p: string, query: string, opts: { at: string; stats?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const when = parseWhen(opts.at);
      await withDataset(cmd, p, when, async (repo, ds) => {
        if (g.json) {
          const r = await ds.sql(query);
          report(repo, ds, opts.stats);
          return printJson({ ...summary(repo, ds), columns: r.columns, rows: r.rows.map((row) => row.map(jsonValue)) });
        }
        // Rows go out as they come, tab-separated, NULL as an empty field.
        let header = false;
        await ds.sql(query, (row, columns) => {
          if (!header && !g.quiet) line(columns.join('\t'));
          header = true;
          line(row.map(textValue).join('\t'));
        });
        report(repo, ds, opts.stats);
      });
    });
}

async function withDataset(cmd: Command, p: string, when: ReturnType<typeof parseWhen>, use: (repo: Repository, ds: Dataset, stopProgress: () => void) => Promise<void>, opts: { progress?: boolean } = {}): Promise<void> {
  const repo = await openRepo(cmd, { readonly: true });
  // A spinner on a terminal, while nothing goes to it but the spinner: a pass over a large mailbox takes a while.
  const progress = new Progress(opts.progress === true && wantsProgress(globals(cmd)), 'reading');
  try {
    const ds = await Dataset.open(repo, absolutePath(p), when);
    ds.onProgress((requested) => progress.update(requested, ds.size, `${formatBytes(ds.fetched)} fetched`));
    await use(repo, ds, () => progress.stop());
  } finally {
    progress.stop();
    repo.close();
  }
}

function summary(repo: Repository, ds: Dataset) {
  return { snapshot: ds.tree.id, path: ds.path, type: ds.type ?? null, what: ds.what, size: ds.size, fetched: ds.fetched, ...(ds.indexed ? { indexFetched: ds.indexFetched } : {}), requested: ds.requested, blocksRead: repo.blocksRead, ...repo.traffic };
}

function report(repo: Repository, ds: Dataset, stats: boolean | undefined): void {
  if (!stats) return;
  const share = ds.size > 0 ? ` (${((100 * ds.fetched) / ds.size).toFixed(2)}%)` : '';
  process.stderr.write(`fetched ${formatBytes(ds.fetched)} of ${formatBytes(ds.size)}${share}; ${repo.blocksRead} blocks read, ${formatBytes(repo.traffic.bytesReceived)} received\n`);
}

function textRows(type: string, items: Record<string, unknown>[]): string[] {
  const s = (v: unknown) => (v === undefined || v === null ? '' : String(v));
  if (items.length === 0) return [];
  if (type === 'mbox') return table([['#', 'offset', 'size', 'date', 'from', 'subject'], ...items.map((m) => [s(m.number), s(m.offset), s(m.size), s(m.date), s(m.from), s(m.subject)])]).split('\n');
  if (type === 'zip') return table([['size', 'compressed', 'mtime', 'name'], ...items.map((e) => [s(e.size), s(e.compressedSize), s(e.mtime), s(e.name)])]).split('\n');
  if ((type === 'disk' || type === 'qcow2') && 'number' in items[0]!) {
    return table([['partition', 'offset', 'size', 'type', 'filesystem', 'name'], ...items.map((p) => [`p${s(p.number)}`, s(p.offset), s(p.size), s(p.type), s(p.filesystem), s(p.name)])]).split('\n');
  }
  if (type === 'disk' || type === 'qcow2') return table([['type', 'size', 'mtime', 'name'], ...items.map((e) => [s(e.type), s(e.size), s(e.mtime), s(e.name)])]).split('\n');
  if (type === 'tar') return table([['type', 'size', 'mtime', 'name'], ...items.map((e) => [s(e.type), s(e.size), s(e.mtime), e.linkname ? `${s(e.name)} -> ${s(e.linkname)}` : s(e.name)])]).split('\n');
  return table([['name', 'type', 'rows', 'columns'], ...items.map((t) => [s(t.name), s(t.type), s(t.rows), (t.columns as string[]).join(', ')])]).split('\n');
}

function jsonValue(v: SqlValue): unknown {
  if (v instanceof Uint8Array) return { base64: Buffer.from(v).toString('base64') };
  if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  return v;
}

function textValue(v: SqlValue): string {
  if (v === null) return '';
  if (v instanceof Uint8Array) return `x'${Buffer.from(v).toString('hex')}'`;
  return String(v);
}

export function registerManifest(program: Command): void {
  program
    .command('manifest')
    .description('list the datasets a snapshot holds (mailboxes, archives, databases, disk images), told by content at backup')
    .option(...AT)
    .option('--type <type>', `only datasets of this type: ${DATASET_TYPES.join(', ')}`)
    .option('--host <name>', 'only consider snapshots of this host')
    .option('--count', 'count the items of each dataset strata reads (reads zip and SQLite directories; mailboxes and tar archives have their count in the manifest, or are scanned)')
    .option(...STATS)
    .action(async (opts: { at: string; type?: string; host?: string; count?: boolean; stats?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const when = parseWhen(opts.at);
      if (opts.type !== undefined && !(DATASET_TYPES as readonly string[]).includes(opts.type)) throw usageError(`--type is one of ${DATASET_TYPES.join(', ')}, not ${opts.type}`);
      const repo = await openRepo(cmd, { readonly: true });
      try {
        const tree = await SnapshotTree.open(repo, { at: when, host: opts.host });
        const rows: (DatasetEntry & { items?: number })[] = [];
        let fetched = 0;
        for (const e of await tree.datasets({ type: opts.type as DatasetType | undefined })) {
          // A dataset with an item index has its count in the manifest already.
          if (!opts.count || !ITEM_TYPES.includes(e.type) || e.items !== undefined) {
            rows.push(e);
            continue;
          }
          const ds = await Dataset.of(tree, e.path);
          rows.push({ ...e, items: (await ds.items()).length });
          fetched += ds.fetched;
        }
        if (opts.stats) process.stderr.write(`fetched ${formatBytes(fetched)}; ${repo.blocksRead} blocks read, ${formatBytes(repo.traffic.bytesReceived)} received\n`);
        if (g.json) return printJson({ snapshot: tree.id, fetched, blocksRead: repo.blocksRead, ...repo.traffic, datasets: rows });
        if (rows.length === 0) return;
        lines(table([['type', 'size', ...(opts.count ? ['items'] : []), 'path'], ...rows.map((r) => [r.what, String(r.size), ...(opts.count ? [r.items === undefined ? '-' : String(r.items)] : []), displayName(r.path)])]).split('\n'));
      } finally {
        repo.close();
      }
    });
}
