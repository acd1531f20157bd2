/**
 * strata ui in a real browser: Debian's chromium, headless, driven by
 * playwright-core. The timeline, a directory of 3,000 entries in the
 * virtualised list, a file's history, change map, comparison, blame and
 * preview, a range download compared byte for byte with the file as it was,
 * a restore, keyboard navigation, and requests from another site and without
 * the session cookie refused. Each page's screenshot goes to
 * test-results/ui-screenshots/ (STRATA_UI_SCREENSHOTS to choose another).
 *
 * Run by `npm run test:ui` (it needs /usr/bin/chromium); `npm test` leaves it out.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup } from '../src/engine/backup.js';
import { cliEnv, makeRepo, Rng, ROOT, tempDir } from './helpers.js';
import { startUi, type RunningUi } from './ui-helpers.js';

const CHROMIUM = process.env.STRATA_CHROMIUM ?? '/usr/bin/chromium';
/** A message of the test's mailbox, as `strata item` gives it back. */
const message = (i: number) => `From: Sender ${i} <s${i}@example.org>\nSubject: note ${i}\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <m${i}@example.org>\n\nBody of ${i}.\n`;

const SHOTS = process.env.STRATA_UI_SCREENSHOTS ?? path.join(ROOT, 'test-results', 'ui-screenshots');

describe('strata ui in chromium', () => {
  let ui: RunningUi;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let dir: string;
  let file: string;
  const ids: string[] = [];
  const versions: Buffer[] = [];

  const shot = (name: string) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
  const hashParams = () => new URLSearchParams(new URL(page.url()).hash.split('?')[1] ?? '');

  beforeAll(async () => {
    fs.mkdirSync(SHOTS, { recursive: true });
    const rng = new Rng(11);
    const repo = await makeRepo({ chunkAvg: 1024 });
    dir = path.join(tempDir(), 'home');
    fs.mkdirSync(path.join(dir, 'many'), { recursive: true });
    for (let i = 0; i < 3000; i++) fs.writeFileSync(path.join(dir, 'many', `item-${String(i).padStart(4, '0')}.dat`), Buffer.alloc(i % 97, 7));
    // Datasets: a mailbox, a zip made by zip, a SQLite database made by better-sqlite3.
    const apps = path.join(dir, 'work');
    fs.mkdirSync(apps);
    fs.writeFileSync(path.join(apps, 'mail.mbox'), Array.from({ length: 150 }, (_, i) => `From s@example.org Mon Jan  1 00:00:00 2024\n${message(i)}\n`).join(''));
    fs.writeFileSync(path.join(apps, 'random.bin'), rng.bytes(200_000));
    execFileSync('zip', ['-q', 'tree.zip', 'random.bin'], { cwd: apps });
    const db = new Database(path.join(apps, 'app.db'));
    db.exec('CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT)');
    const add = db.prepare('INSERT INTO people VALUES (?, ?)');
    for (let i = 0; i < 300; i++) add.run(i, `person ${i}`);
    db.close();
    file = path.join(dir, 'report.bin');
    let data = rng.bytes(300_000);
    const steps = [() => data, () => Buffer.concat([data.subarray(0, 100_000), rng.bytes(20_000), data.subarray(100_000)]), () => Buffer.concat([data.subarray(0, 250_000), rng.bytes(5_000), data.subarray(255_000)])];
    for (let k = 0; k < steps.length; k++) {
      data = steps[k]!();
      fs.writeFileSync(file, data);
      ids.push((await backup(repo, { paths: [dir], time: Date.UTC(2026, 2, 1 + k), tags: k === 0 ? ['first'] : [] })).snapshot);
      versions.push(data);
    }
    const root = repo.root;
    repo.close();
    ui = await startUi(cliEnv(root, { STRATA_PASSWORD: 'test-password' }));
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
    context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
    page = await context.newPage();
  });

  afterAll(async () => {
    await browser?.close();
  });

  it('the timeline, and keyboard navigation into a snapshot', async () => {
    await page.goto(ui.url);
    await page.waitForSelector('.timeline .row[data-snapshot]');
    // The one-time token leaves the address bar.
    expect(page.url()).not.toContain('token');
    const rows = page.locator('.timeline .spacer .row');
    expect(await rows.count()).toBe(3);
    expect(await rows.first().getAttribute('data-snapshot')).toBe(ids[2]);
    await expect.poll(() => page.locator('.timeline .spacer .row >> nth=2').textContent()).toContain('first');
    await shot('timeline');
    await page.locator('.grid.timeline').focus();
    await page.keyboard.press('ArrowDown');
    await page.keyboard.press('ArrowDown');
    expect(await page.locator('.timeline .row[aria-current=true]').getAttribute('data-snapshot')).toBe(ids[0]);
    await page.keyboard.press('Enter');
    await page.waitForSelector('.spacer .row[data-path]');
    expect(hashParams().get('at')).toBe(ids[0]);
  });

  it('a directory of 3,000 entries: paged, virtualised, searched, sorted, walked with the keyboard', async () => {
    await page.goto(`${ui.origin}/#/browse?at=${ids[2]}&path=${encodeURIComponent(path.join(dir, 'many'))}`);
    await page.waitForSelector('.spacer .row[data-path]');
    await expect.poll(() => page.locator('[role=status]').first().textContent()).toBe('3000 entries');
    // Only the rows in view are in the document.
    expect(await page.locator('.spacer .row').count()).toBeLessThan(40);
    await shot('browser');
    await page.locator('.viewport').evaluate((v) => (v.scrollTop = v.scrollHeight));
    await page.waitForSelector(`.spacer .row[data-path$="item-2999.dat"]`);
    await page.getByRole('button', { name: 'Sort by Size' }).click();
    await page.getByRole('button', { name: 'Sort by Size' }).click();
    await expect.poll(() => page.locator('[role=columnheader].col-size').getAttribute('aria-sort')).toBe('descending');
    // Largest first (sizes are i % 97): the last of the 96-byte items by name leads.
    await expect.poll(() => page.locator('.spacer .row >> nth=0').getAttribute('data-path')).toMatch(/item-2909\.dat$/);
    await page.getByLabel('Search names').fill('item-120');
    await expect.poll(() => page.locator('[role=status]').first().textContent()).toBe('10 entries');
    // Up to the parent with Backspace, down to the file with the arrows and Enter.
    await page.locator('[role=grid]').focus();
    await page.keyboard.press('Backspace');
    await expect.poll(() => hashParams().get('path')).toBe(dir);
    await page.waitForSelector('.spacer .row[data-path$="report.bin"]');
    await page.locator('[role=grid]').focus();
    for (let i = 0; i < 10; i++) {
      const active = await page.locator('.spacer .row.active').getAttribute('data-path');
      if (active === file) break;
      await page.keyboard.press('ArrowDown');
    }
    await page.keyboard.press('Enter');
    await expect.poll(() => new URL(page.url()).hash.startsWith('#/history')).toBe(true);
    expect(hashParams().get('path')).toBe(file);
  });

  it("a file's history and its change map", async () => {
    // The pages that colour by snapshot are told each one's colour with their answer: none asks for the list of snapshots.
    const asked: string[] = [];
    const onRequest = (r: { url: () => string }) => void asked.push(new URL(r.url()).pathname);
    page.on('request', onRequest);
    await page.goto(`${ui.origin}/#/history?at=${ids[2]}&path=${encodeURIComponent(file)}`);
    await page.waitForSelector('table[aria-label=Versions] tbody tr');
    expect(await page.locator('table[aria-label=Versions] tbody tr').count()).toBe(3);
    const historyColours = await page.locator('table[aria-label=Versions] tbody tr').evaluateAll((rows) => Object.fromEntries(rows.map((r) => [r.getAttribute('data-snapshot')!.slice(0, 8), getComputedStyle(r.querySelector('.swatch')!).backgroundColor])));
    expect(new Set(Object.values(historyColours)).size).toBe(3);
    await shot('history');
    await page.locator('table[aria-label=Versions] tbody tr >> nth=2').getByRole('link', { name: 'map' }).click();
    await page.waitForSelector('.bar .seg');
    const segs = page.locator('[aria-label="Data entries and reference blocks along the file"] .seg');
    expect(await segs.count()).toBeGreaterThan(2);
    expect(await page.locator('[aria-label="Data entries and reference blocks along the file"] .seg.ref').first().getAttribute('title')).toMatch(/^reference 0x[0-9A-F]+–0x[0-9A-F]+ → snapshot [0-9a-f]{8}/);
    // Bytes from all three snapshots: the baseline, the insertion, the overwrite.
    expect(await page.locator('.legend li').count()).toBe(3);
    // Each snapshot in the colour the history gave it.
    const legendColours = await page.locator('.legend li').evaluateAll((items) => Object.fromEntries(items.map((li) => [li.querySelector('.mono')!.textContent!, getComputedStyle(li.querySelector('.swatch')!).backgroundColor])));
    expect(legendColours).toEqual(historyColours);
    await page.locator('[aria-label="The snapshot that wrote each part of the file"] .seg').first().hover();
    await shot('change-map');
    await page.goto(`${ui.origin}/#/blame?at=${ids[2]}&path=${encodeURIComponent(file)}`);
    await page.waitForSelector('table[aria-label=Blame] tbody tr');
    const blameColours = await page.locator('table[aria-label=Blame] tbody tr').evaluateAll((rows) => rows.map((r) => [r.getAttribute('data-snapshot')!.slice(0, 8), getComputedStyle(r.querySelector('.swatch')!).backgroundColor]));
    for (const [id, c] of blameColours) expect(c).toBe(historyColours[id!]);
    page.off('request', onRequest);
    expect(asked.filter((p) => p.startsWith('/api/'))).not.toContain('/api/snapshots');
    expect(asked).toContain('/api/toc');
  });

  it('two versions compared, a range blamed, a range previewed', async () => {
    await page.goto(`${ui.origin}/#/compare?at=${ids[1]}&path=${encodeURIComponent(file)}&a=${ids[0]}&b=${ids[1]}`);
    await page.waitForSelector('ul[aria-label="Changed ranges of the newer version"] li');
    const text = await page.locator('ul[aria-label="Changed ranges of the newer version"]').textContent();
    const [s, e] = /(\d+)–(\d+)/.exec(text!)!.slice(1).map(Number) as [number, number];
    expect(s).toBeLessThanOrEqual(100_000);
    expect(e).toBeGreaterThanOrEqual(119_999);
    await shot('compare');
    await page.goto(`${ui.origin}/#/blame?at=${ids[2]}&path=${encodeURIComponent(file)}`);
    // The whole file's blame comes first: the range is asked once it is shown, and its answer awaited.
    await page.waitForSelector('table[aria-label=Blame] tbody tr');
    await page.getByLabel('Start byte').fill('90000');
    await page.getByLabel('End byte (inclusive)').fill('130000');
    await page.getByLabel('End byte (inclusive)').press('Enter');
    await page.waitForFunction(() => document.querySelector('table[aria-label=Blame] tbody tr td')?.textContent === '90000');
    const blamed = await page.locator('table[aria-label=Blame] tbody tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-snapshot')));
    expect(blamed).toContain(ids[1]);
    expect(blamed).toContain(ids[0]);
    expect(blamed).not.toContain(ids[2]);
    await shot('blame');
    await page.goto(`${ui.origin}/#/preview?at=${ids[2]}&path=${encodeURIComponent(file)}&start=4096&length=64`);
    await page.waitForSelector('pre.hex');
    const first = (await page.locator('pre.hex').textContent())!.split('\n')[0]!;
    expect(first.slice(0, 10)).toBe((4096).toString(16).padStart(10, '0'));
    expect(first.slice(12, 59).trim()).toBe([...versions[2]!.subarray(4096, 4112)].map((x) => x.toString(16).padStart(2, '0')).join(' '));
    await shot('preview');
  });

  it('a range download, compared with the file as it was', async () => {
    await page.goto(`${ui.origin}/#/download?at=${ids[1]}&path=${encodeURIComponent(file)}`);
    await page.getByLabel('Start byte').fill('99000');
    await page.getByLabel('End byte (inclusive)').fill('180000');
    await page.getByRole('button', { name: 'Make link' }).click();
    await page.waitForSelector('#download-range');
    await shot('download');
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download-range')]);
    const got = fs.readFileSync((await download.path())!);
    expect(got.equals(versions[1]!.subarray(99_000, 180_001))).toBe(true);
    const [whole] = await Promise.all([page.waitForEvent('download'), page.click('#download-file')]);
    expect(fs.readFileSync((await whole.path())!).equals(versions[1]!)).toBe(true);
  });

  it('a restore with progress', async () => {
    const target = path.join(tempDir(), 'restored');
    await page.goto(`${ui.origin}/#/restore?at=${ids[0]}&path=${encodeURIComponent(file)}`);
    await page.getByLabel('Target directory').fill(target);
    await page.getByRole('button', { name: 'Restore' }).click();
    await page.waitForSelector('text=Done:');
    expect(fs.readFileSync(path.join(target, file)).equals(versions[0]!)).toBe(true);
    await shot('restore');
  });

  it('a selection made with the keyboard, restored together', async () => {
    const target = path.join(tempDir(), 'selection');
    await page.goto(`${ui.origin}/#/browse?at=${ids[2]}&path=${encodeURIComponent(dir)}`);
    await page.waitForSelector('.spacer .row[data-path$="report.bin"]');
    await page.locator('[role=grid]').focus();
    await page.keyboard.press('Space');
    await page.keyboard.press('ArrowDown');
    await page.keyboard.press('Space');
    expect(await page.locator('.spacer .row[aria-selected=true]').count()).toBe(2);
    await page.click('#restore-selection');
    expect(await page.locator('ul[aria-label="Paths to restore"] li').allTextContents()).toEqual([path.join(dir, 'many'), file]);
    await page.getByLabel('Target directory').fill(target);
    await page.getByRole('button', { name: 'Restore' }).click();
    await page.waitForSelector('text=Done:');
    expect(fs.readFileSync(path.join(target, file)).equals(versions[2]!)).toBe(true);
    expect(fs.readdirSync(path.join(target, dir, 'many')).length).toBe(3000);
  });

  it('refuses another site and a browser without the session cookie', async () => {
    // A page of another origin posts a restore to the UI, as a script would (its answer is hidden
    // from the page anyway) and as a form that navigates there: the server refuses both.
    const target = path.join(tempDir(), 'from-evil');
    const body = JSON.stringify({ at: ids[0], paths: [file], target });
    const evil = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(
        `<form id="f" method="post" enctype="text/plain" action="${ui.origin}/api/restore"><input name='${body.slice(0, -2)}' value='${body.slice(-2)}'></form>` +
          `<script>fetch(${JSON.stringify(ui.origin + '/api/restore')}, { method: 'POST', mode: 'no-cors', credentials: 'include', headers: { 'content-type': 'text/plain' }, body: ${JSON.stringify(body)} }).finally(() => document.getElementById('f').submit());</script>`,
      );
    });
    await new Promise<void>((r) => evil.listen(0, '127.0.0.1', r));
    try {
      const evilPage = await context.newPage();
      const answer = evilPage.waitForResponse((r) => r.url().includes('/api/restore') && r.request().isNavigationRequest());
      await evilPage.goto(`http://127.0.0.1:${(evil.address() as AddressInfo).port}/`);
      const r = await answer;
      expect(r.status()).toBe(403);
      expect(await r.text()).toMatch(/other sites/);
      await evilPage.close();
    } finally {
      evil.close();
    }
    expect(fs.existsSync(target)).toBe(false);
    // A browser that never had the link.
    const stranger = await browser.newContext();
    try {
      const p = await stranger.newPage();
      expect((await p.goto(`${ui.origin}/`))!.status()).toBe(403);
      expect((await p.goto(`${ui.origin}/api/snapshots`))!.status()).toBe(403);
      // The link, used once already, does not let it in either.
      expect((await p.goto(ui.url))!.status()).toBe(403);
    } finally {
      await stranger.close();
    }
  });
  it("a snapshot's datasets: a message found, previewed and downloaded, a zip entry downloaded, SQL run", async () => {
    const apps = path.join(dir, 'work');
    await page.goto(`${ui.origin}/#/datasets?at=${ids[2]}`);
    await page.waitForSelector('table[aria-label=Datasets] tbody tr');
    const rows = page.locator('table[aria-label=Datasets] tbody tr');
    expect(await rows.evaluateAll((rs) => rs.map((r) => r.getAttribute('data-path')))).toEqual(['app.db', 'mail.mbox', 'tree.zip'].map((n) => path.join(apps, n)));
    await shot('datasets');
    // The keyboard: down to the mailbox, Enter, down to the third message, Enter.
    await rows.first().focus();
    await page.keyboard.press('ArrowDown');
    await page.keyboard.press('Enter');
    await page.waitForSelector('table[aria-label=Items] tbody tr');
    // Read as far as the page: the count is not known yet.
    await expect.poll(() => page.getByRole('status').first().textContent()).toBe('Items 1–100, more follow');
    expect(await page.locator('table[aria-label=Items] tbody tr >> nth=2').textContent()).toContain('note 2');
    await shot('items');
    await page.locator('table[aria-label=Items] tbody tr').first().focus();
    await page.keyboard.press('ArrowDown');
    await page.keyboard.press('ArrowDown');
    await page.keyboard.press('Enter');
    await page.waitForSelector('pre.hex');
    expect(hashParams().get('item')).toBe('3');
    expect(await page.locator('pre.hex').textContent()).toContain('From: Sender 2 <');
    await shot('item');
    const [mail] = await Promise.all([page.waitForEvent('download'), page.click('#download-item')]);
    expect(fs.readFileSync((await mail.path())!).toString()).toBe(message(2));
    // The next page goes on to the end, and says the count.
    await page.goto(`${ui.origin}/#/items?at=${ids[2]}&path=${encodeURIComponent(path.join(apps, 'mail.mbox'))}`);
    await page.getByRole('button', { name: 'Next page' }).click();
    await expect.poll(() => page.getByRole('status').first().textContent()).toBe('Items 101–150 of 150');
    expect(await page.getByRole('button', { name: 'Next page' }).isDisabled()).toBe(true);
    expect(await page.locator('table[aria-label=Items] tbody tr >> nth=0').textContent()).toContain('note 100');
    // Searched on the server.
    await page.goto(`${ui.origin}/#/items?at=${ids[2]}&path=${encodeURIComponent(path.join(apps, 'mail.mbox'))}`);
    await page.getByLabel('Search items').fill('NOTE 4');
    await page.getByLabel('Search items').press('Enter');
    await expect.poll(() => page.getByRole('status').first().textContent()).toBe('Items 1–11 of 11');
    // A zip entry, byte for byte.
    await page.goto(`${ui.origin}/#/items?at=${ids[2]}&path=${encodeURIComponent(path.join(apps, 'tree.zip'))}`);
    await page.locator('tr[data-item="random.bin"]').click();
    await page.waitForSelector('pre.hex');
    const [entry] = await Promise.all([page.waitForEvent('download'), page.click('#download-item')]);
    expect(fs.readFileSync((await entry.path())!).equals(fs.readFileSync(path.join(apps, 'random.bin')))).toBe(true);
    // A table opens in the SQL console; its rows come a page at a time.
    await page.goto(`${ui.origin}/#/items?at=${ids[2]}&path=${encodeURIComponent(path.join(apps, 'app.db'))}`);
    await page.locator('tr[data-item="people"]').focus();
    await page.keyboard.press('Enter');
    await page.waitForSelector('table[aria-label="Query results"] tbody tr');
    expect(await page.getByLabel(/SQL query/).inputValue()).toBe('SELECT * FROM "people"');
    await expect.poll(() => page.getByRole('status').first().textContent()).toMatch(/^Rows 1–100, more follow/);
    await page.getByRole('button', { name: 'Next rows' }).click();
    await expect.poll(() => page.getByRole('status').first().textContent()).toMatch(/^Rows 101–200, more follow/);
    // The status names the rows shown (not the page asked for while it is on its way).
    expect(await page.locator('table[aria-label="Query results"] tbody tr').first().textContent()).toBe('100person 100');
    await page.getByLabel(/SQL query/).fill('SELECT count(*) AS n, max(name) FROM people');
    await page.getByLabel(/SQL query/).press('Control+Enter');
    await expect.poll(() => page.locator('table[aria-label="Query results"] tbody tr').first().textContent()).toBe('300person 99');
    expect(await page.locator('table[aria-label="Query results"] thead').textContent()).toBe('nmax(name)');
    await shot('sql');
    await page.getByLabel(/SQL query/).fill('DELETE FROM people');
    await page.getByRole('button', { name: 'Run' }).click();
    await expect.poll(() => page.getByRole('alert').textContent()).toMatch(/readonly|read-only/i);
    await shot('sql-error');
  });
});
