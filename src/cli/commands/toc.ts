import type { Command } from 'commander';
import { absolutePath, openFile } from '../../engine/read.js';
import { findSnapshot } from '../../engine/snapshot.js';
import { checkTocRows } from '../../engine/verify.js';
import { referenceBlocks, type TocEntry } from '../../catalog/toc.js';
import { integrity } from '../../errors.js';
import type { TocRow } from '../../catalog/catalog.js';
import { parseWhen } from '../../util/when.js';
import { globals, openRepo } from '../context.js';
import { line, printJson, shortId, table } from '../output.js';

export function register(program: Command): void {
  program
    .command('toc')
    .description("show a file version's table of contents: data entries and reference blocks with their offsets")
    .argument('<path>', 'the file (absolute, or relative to the current directory)')
    .option('--at <when>', 'latest, a snapshot id or prefix, or an ISO 8601 date/time', 'latest')
    .option('--blocks', "one reference block per unchanged block of the target (the seed's FIG. 6 view)")
    .option('--host <name>', 'only consider snapshots of this host')
    .action(async (p: string, opts: { at: string; blocks?: boolean; host?: string }, cmd: Command) => {
      const g = globals(cmd);
      const when = parseWhen(opts.at);
      const repo = await openRepo(cmd, { readonly: true });
      try {
        const abs = absolutePath(p);
        const snap = await findSnapshot(repo, when, abs, opts.host);
        const file = await openFile(snap, abs);
        const rows = coalesce(await repo.service.toc(file.version.id));
        // The catalog's rows are shown only once they agree with the sealed TOCs.
        await checkTocRows(repo, file.version, rows);
        const target = rows.find((r) => r.target !== null)?.target ?? null;
        const targetVersion = target !== null ? await repo.service.versionById(target) : undefined;
        if (target !== null && !targetVersion) throw integrity(`TOC of ${abs} points at a missing version`);
        const targetSnap = targetVersion ? ((await repo.service.snapshotBySeq(targetVersion.snapshot))?.id ?? '?') : null;
        let entries: TocEntry[] = rows.map(toEntry);
        if (opts.blocks && targetVersion) entries = referenceBlocks(entries, await repo.service.blockList(targetVersion.id, targetVersion.size));
        const out = entries.map((e) =>
          e.kind === 'data'
            ? { start: e.start, end: e.end, kind: 'data' as const, block: e.block.toString('hex'), size: e.end - e.start + 1 }
            : { start: e.start, end: e.end, kind: 'ref' as const, target: { snapshot: targetSnap!, start: e.targetStart, end: e.targetEnd }, offset: e.start - e.targetStart },
        );
        if (g.json) return printJson(out);
        const hex = (n: number) => '0x' + n.toString(16).toUpperCase();
        const table_ = [['#', 'Start', 'End', 'Kind', 'Points at']];
        out.forEach((e, i) => {
          if (e.kind === 'data') table_.push([String(i + 1), hex(e.start), hex(e.end), 'data', `block ${e.block.slice(0, 16)} (${e.size} B)`]);
          else {
            const sign = e.offset >= 0 ? '+' : '-';
            table_.push([String(i + 1), hex(e.start), hex(e.end), 'ref', `snapshot ${shortId(e.target.snapshot)} ${hex(e.target.start)}-${hex(e.target.end)} (offset ${sign}${hex(Math.abs(e.offset))})`]);
          }
        });
        // A file unchanged since an earlier snapshot has that snapshot's version.
        const owner = file.version.snapshot === snap.row.seq ? undefined : (await repo.service.snapshotBySeq(file.version.snapshot))?.id;
        line(`${abs} in snapshot ${shortId(snap.id)}: ${file.version.size} bytes, ${out.length} entries${owner ? ` (unchanged since snapshot ${shortId(owner)})` : ''}`);
        line(table(table_));
      } finally {
        repo.close();
      }
    });
}

/** Joins rows the catalog split to bound read depth back into the TOC's maximal runs. */
function coalesce(rows: TocRow[]): TocRow[] {
  const out: TocRow[] = [];
  for (const r of rows) {
    const last = out[out.length - 1];
    if (last && last.block === null && r.block === null && last.target === r.target && last.end + 1 === r.start && last.target_start! + (last.end - last.start + 1) === r.target_start) {
      out[out.length - 1] = { ...last, end: r.end };
    } else out.push(r);
  }
  return out;
}

function toEntry(r: TocRow): TocEntry {
  if (r.block) return { kind: 'data', start: r.start, end: r.end, block: r.block };
  return { kind: 'ref', start: r.start, end: r.end, targetStart: r.target_start!, targetEnd: r.target_start! + (r.end - r.start) };
}
