#!/usr/bin/env node
// node scripts/cpuprofile-top.mjs FILE.cpuprofile... [--top 25]
//
// The functions with the most self time in V8 CPU profiles (node --cpu-prof),
// one table per profile (the main thread and each worker write their own):
// milliseconds, share of the profile's samples, function and place.
import * as fs from 'node:fs';
import * as path from 'node:path';

const i = process.argv.indexOf('--top');
const top = i >= 0 ? Number(process.argv[i + 1]) : 25;
const files = process.argv.slice(2).filter((a, k, all) => a !== '--top' && all[k - 1] !== '--top');

for (const file of files) {
  const p = JSON.parse(fs.readFileSync(file, 'utf8'));
  const nodes = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map();
  p.samples.forEach((id, k) => self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[k] ?? 0)));
  const byFn = new Map();
  let total = 0;
  for (const [id, us] of self) {
    const f = nodes.get(id).callFrame;
    const where = f.url ? `${path.basename(f.url)}:${f.lineNumber + 1}` : '';
    const k = `${f.functionName || '(anonymous)'} ${where}`.trim();
    byFn.set(k, (byFn.get(k) ?? 0) + us);
    total += us;
  }
  const idle = byFn.get('(idle)') ?? 0;
  console.log(`\n${path.basename(file)}: ${(total / 1000).toFixed(0)} ms sampled, ${(idle / 1000).toFixed(0)} ms idle`);
  console.log('| self ms | % of busy | function |\n|---:|---:|---|');
  for (const [k, us] of [...byFn].filter(([k]) => k !== '(idle)').sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(`| ${(us / 1000).toFixed(0)} | ${((100 * us) / (total - idle)).toFixed(1)} | ${k.replace(/\|/g, '\\|')} |`);
  }
}
