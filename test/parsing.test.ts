import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { commandWord } from '../src/cli/main.js';
import { ExcludeMatcher } from '../src/util/glob.js';
import { parseRange, resolveRange } from '../src/util/range.js';
import { parseSize } from '../src/util/size.js';
import { parseIsoTime, parseWhen } from '../src/util/when.js';
import { strata, tempDir } from './helpers.js';

describe('ranges', () => {
  it('parses HTTP-style ranges in decimal and hex', () => {
    expect(parseRange('0-99')).toEqual({ start: 0, end: 99 });
    expect(parseRange('0x1FB-0x2EE')).toEqual({ start: 0x1fb, end: 0x2ee });
    expect(parseRange('100-')).toEqual({ start: 100 });
    expect(parseRange('-10')).toEqual({ suffix: 10 });
  });
  it('takes binary size units and START+LENGTH', () => {
    expect(parseRange('1K-2K')).toEqual({ start: 1024, end: 2048 });
    expect(parseRange('1M+4K')).toEqual({ start: 1024 ** 2, end: 1024 ** 2 + 4095 });
    expect(parseRange('2mib-')).toEqual({ start: 2 * 1024 ** 2 });
    expect(parseRange('-1G')).toEqual({ suffix: 1024 ** 3 });
    expect(parseRange('0x10+16')).toEqual({ start: 16, end: 31 });
    expect(parseRange('3TiB+1')).toEqual({ start: 3 * 1024 ** 4, end: 3 * 1024 ** 4 });
  });
  it('rejects malformed ranges', () => {
    for (const bad of ['1M+0', '+4K', '1M+', '1KB-2K', '1.5M-2M', '0x10K-', '1M+-4', '4X-5']) expect(() => parseRange(bad), bad).toThrow(/range/);
    for (const bad of ['', '-', 'abc', '5', '10-5', '0x-1', '1.5-2', '-0xZZ']) expect(() => parseRange(bad), bad).toThrow(/range/);
  });
  it('clamps END past EOF and refuses START past EOF', () => {
    expect(resolveRange(parseRange('10-1000'), 100)).toEqual({ start: 10, end: 99 });
    expect(resolveRange(parseRange('-30'), 100)).toEqual({ start: 70, end: 99 });
    expect(resolveRange(parseRange('-300'), 100)).toEqual({ start: 0, end: 99 });
    expect(() => resolveRange(parseRange('100-'), 100)).toThrow(/not satisfiable/);
  });
});

describe('WHEN', () => {
  it('knows latest, ids and dates', () => {
    expect(parseWhen(undefined)).toEqual({ kind: 'latest' });
    expect(parseWhen('latest')).toEqual({ kind: 'latest' });
    expect(parseWhen('3f2A')).toEqual({ kind: 'id', prefix: '3f2a' });
    expect(parseWhen('2026-03-01T12:00:00Z')).toEqual({ kind: 'time', time: Date.UTC(2026, 2, 1, 12) });
    expect(parseWhen('2026-03-01').kind).toBe('time');
  });
  it('reads a bare date as the end of that day, or its start for snapshot times', () => {
    expect(parseIsoTime('2026-03-01')).toBe(new Date(2026, 2, 1, 23, 59, 59, 999).getTime());
    expect(parseIsoTime('2026-03-01', 'start')).toBe(new Date(2026, 2, 1).getTime());
  });
  it('reads compact dates: YYYYMMDD is an id prefix or else that date, YYYYMMDDTHHMMSS a time', () => {
    expect(parseWhen('20261109')).toEqual({ kind: 'id', prefix: '20261109', time: new Date(2026, 10, 9, 23, 59, 59, 999).getTime() });
    expect(parseWhen('20261399')).toEqual({ kind: 'id', prefix: '20261399' });
    expect(parseWhen('20261109T120000Z')).toEqual({ kind: 'time', time: Date.UTC(2026, 10, 9, 12) });
    expect(parseWhen('20261109T1200+0200')).toEqual({ kind: 'time', time: Date.UTC(2026, 10, 9, 10) });
    expect(parseWhen('20261109T120000')).toEqual({ kind: 'time', time: new Date(2026, 10, 9, 12).getTime() });
    expect(parseIsoTime('20261109', 'start')).toBe(new Date(2026, 10, 9).getTime());
  });
  it('rejects malformed WHEN', () => {
    for (const bad of ['yesterday', '2026-13-01', '2026-02-30', 'xyz!', '2026-03-01T25:00', '20261109T25', '20261332T120000']) expect(() => parseWhen(bad), bad).toThrow();
  });
});

describe('sizes and excludes', () => {
  it('parses sizes', () => {
    expect(parseSize('64K')).toBe(65536);
    expect(parseSize('1MiB')).toBe(1 << 20);
    expect(parseSize('4096')).toBe(4096);
    expect(() => parseSize('lots')).toThrow(/invalid size/);
  });
  it('matches names, anchored paths and **', () => {
    const m = new ExcludeMatcher(['*.tmp', '/data/cache', 'logs/**/old', 'node_modules']);
    expect(m.excludes('/a/b/x.tmp', 'x.tmp')).toBe(true);
    expect(m.excludes('/a/b/x.tmpx', 'x.tmpx')).toBe(false);
    expect(m.excludes('/data/cache', 'cache')).toBe(true);
    expect(m.excludes('/other/data/cache', 'cache')).toBe(false);
    expect(m.excludes('/srv/logs/2026/01/old', 'old')).toBe(true);
    expect(m.excludes('/srv/logs/old', 'old')).toBe(true);
    expect(m.excludes('/srv/app/node_modules', 'node_modules')).toBe(true);
  });
});

describe('the command word, which decides the one command module a run loads', () => {
  it('skips global options and their values, wherever they are', () => {
    expect(commandWord(['--repo', 'cat', 'ls', '/x'])).toBe('ls');
    expect(commandWord(['-r', 'backup', '--key-file', 'restore', 'cat', '/f'])).toBe('cat');
    expect(commandWord(['-q', '--json', '--no-cache', 'snapshots'])).toBe('snapshots');
    expect(commandWord(['--repo=cat', 'ls'])).toBe('ls');
    expect(commandWord(['--help'])).toBeUndefined();
    expect(commandWord(['help', 'cat'])).toBe('help');
  });

  it('a repository named like a command still runs the command given', () => {
    const r = strata(['--repo', path.join(tempDir(), 'cat'), 'snapshots'], { ...process.env, STRATA_PASSWORD: 'x' });
    expect(r.status).toBe(10);
    expect(r.stderr).toMatch(/no repository/);
  });
});
