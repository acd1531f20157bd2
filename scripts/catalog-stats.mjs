#!/usr/bin/env node
// node scripts/catalog-stats.mjs REPO/catalog.db
//
// Where a catalog's bytes go: pages per table and index (SQLite's dbstat),
// with rows per table and bytes per row. Opens the file read-only.
import Database from 'better-sqlite3';

const db = new Database(process.argv[2], { readonly: true, fileMustExist: true });
const pageSize = db.pragma('page_size', { simple: true });
const total = db.pragma('page_count', { simple: true }) * pageSize;
const objects = db.prepare("SELECT name, type, tbl_name FROM sqlite_schema WHERE type IN ('table', 'index')").all();
const stats = db.prepare('SELECT name, count(*) AS pages, sum(pgsize) AS bytes, sum(payload) AS payload, sum(unused) AS unused FROM dbstat GROUP BY name ORDER BY bytes DESC').all();
console.log(`${process.argv[2]}: ${(total / 1e6).toFixed(2)} MB, page size ${pageSize}`);
console.log('| object | kind | MB | share | payload MB | unused MB | rows | bytes/row |\n|---|---|---:|---:|---:|---:|---:|---:|');
for (const s of stats) {
  const o = objects.find((x) => x.name === s.name);
  const kind = o ? (o.type === 'index' ? `index on ${o.tbl_name}` : 'table') : 'internal';
  let rows = '';
  if (o?.type === 'table') rows = db.prepare(`SELECT count(*) AS n FROM "${s.name.replace(/"/g, '""')}"`).get().n;
  const per = rows ? (s.bytes / rows).toFixed(0) : '';
  console.log(`| ${s.name} | ${kind} | ${(s.bytes / 1e6).toFixed(2)} | ${((100 * s.bytes) / total).toFixed(1)}% | ${(s.payload / 1e6).toFixed(2)} | ${(s.unused / 1e6).toFixed(2)} | ${rows} | ${per} |`);
}
