// Deterministic benchmark corpus: a VM-disk-like image, log files, an mbox
// mailbox and incompressible media, plus the mutation the benchmark applies.
// Bytes come from AES-CTR under a fixed key, so every run and every machine
// sees the same corpus for the same size.
import { createCipheriv } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** A seeded stream of pseudo-random bytes. */
export class Stream {
  constructor(seed) {
    const key = Buffer.alloc(32);
    key.write(`strata bench ${seed}`);
    this.cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  }
  bytes(n) {
    return this.cipher.update(Buffer.alloc(n));
  }
  int(n) {
    return this.bytes(4).readUInt32LE(0) % n;
  }
}

const WORDS = 'request served user login failed retry cache miss hit backend timeout connection reset worker started stopped queue depth latency ms ok error warn info debug session token refresh upload download block chunk index pack verify'.split(' ');

function textLine(rng, i) {
  const n = 6 + rng.int(10);
  const words = [];
  for (let k = 0; k < n; k++) words.push(WORDS[rng.int(WORDS.length)]);
  const t = new Date(Date.UTC(2026, 0, 1) + i * 1370).toISOString();
  return `${t} host${rng.int(16)} app[${1000 + rng.int(9000)}]: ${words.join(' ')} id=${rng.int(1_000_000)}\n`;
}

function writeText(file, bytes, rng, lineStart = 0) {
  const fd = fs.openSync(file, 'w');
  let written = 0;
  let i = lineStart;
  while (written < bytes) {
    let chunk = '';
    while (chunk.length < 65536) chunk += textLine(rng, i++);
    fs.writeSync(fd, chunk);
    written += chunk.length;
  }
  fs.closeSync(fd);
}

export function message(rng, n) {
  let body = '';
  const lines = 20 + rng.int(80);
  for (let k = 0; k < lines; k++) body += textLine(rng, n * 100 + k).slice(25);
  return `From sender${n}@example.org Thu Jan  1 00:00:00 2026\nFrom: sender${n}@example.org\nTo: team@example.org\nSubject: report ${n}\nMessage-ID: <${n}@example.org>\n\n${body}\n`;
}

/** Writes the corpus of about `size` bytes under `dir`. */
export function makeCorpus(dir, size) {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(path.join(dir, 'logs'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'media'), { recursive: true });
  const rng = new Stream('corpus');
  // Image: 40 %, in 1 MiB regions of zeros, random data and a repeated pattern.
  const imageSize = Math.floor((size * 0.4) / (1 << 20)) * (1 << 20);
  const img = fs.openSync(path.join(dir, 'disk.img'), 'w');
  const pattern = rng.bytes(64 * 1024);
  for (let off = 0; off < imageSize; off += 1 << 20) {
    const kind = rng.int(10);
    let region;
    if (kind < 3) region = Buffer.alloc(1 << 20);
    else if (kind < 7) region = rng.bytes(1 << 20);
    else {
      region = Buffer.concat(Array.from({ length: 16 }, () => pattern));
      rng.bytes(64).copy(region, rng.int((1 << 20) - 64));
    }
    fs.writeSync(img, region, 0, region.length, off);
  }
  fs.closeSync(img);
  // Logs: 20 %, in 100 files.
  const logs = 100;
  for (let i = 0; i < logs; i++) writeText(path.join(dir, 'logs', `app-${String(i).padStart(3, '0')}.log`), (size * 0.2) / logs, rng, i * 1_000_000);
  // Mailbox: 20 %.
  const mbox = fs.openSync(path.join(dir, 'mail.mbox'), 'w');
  let written = 0;
  for (let n = 0; written < size * 0.2; n++) {
    const m = message(rng, n);
    fs.writeSync(mbox, m);
    written += m.length;
  }
  fs.closeSync(mbox);
  // Media: 20 %, incompressible, in 8 files.
  for (let i = 0; i < 8; i++) {
    const fd = fs.openSync(path.join(dir, 'media', `clip-${i}.mp4`), 'w');
    for (let w = 0; w < (size * 0.2) / 8; w += 1 << 20) fs.writeSync(fd, rng.bytes(1 << 20));
    fs.closeSync(fd);
  }
  return { imageSize };
}

/**
 * The mutation: 50 scattered 4 KiB overwrites in the image, one message
 * inserted in the middle of the mailbox (every later offset shifts), lines
 * appended to one log. `round` varies the overwrites between rounds.
 */
export function mutate(dir, round = 0) {
  const rng = new Stream(`mutation ${round}`);
  const imgPath = path.join(dir, 'disk.img');
  const imageSize = fs.statSync(imgPath).size;
  const img = fs.openSync(imgPath, 'r+');
  for (let i = 0; i < 50; i++) {
    const at = Math.floor(rng.int(imageSize / 4096)) * 4096;
    fs.writeSync(img, rng.bytes(4096), 0, 4096, at);
  }
  fs.closeSync(img);
  const mboxPath = path.join(dir, 'mail.mbox');
  const mbox = fs.readFileSync(mboxPath);
  const mid = mbox.indexOf('\nFrom sender', Math.floor(mbox.length / 2)) + 1;
  fs.writeFileSync(mboxPath, Buffer.concat([mbox.subarray(0, mid), Buffer.from(message(rng, 9_999_999 + round)), mbox.subarray(mid)]));
  let lines = '';
  for (let i = 0; i < 200; i++) lines += textLine(rng, 50_000_000 + round * 1000 + i);
  fs.appendFileSync(path.join(dir, 'logs', 'app-007.log'), lines);
}

/** Overwrites a few pages of the image only (one incremental of the chain test). */
export function touchImage(file, round) {
  const rng = new Stream(`chain ${round}`);
  const size = fs.statSync(file).size;
  const fd = fs.openSync(file, 'r+');
  for (let i = 0; i < 4; i++) fs.writeSync(fd, rng.bytes(4096), 0, 4096, Math.floor(rng.int(size / 4096)) * 4096);
  fs.closeSync(fd);
}
