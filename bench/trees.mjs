// Deterministic trees of many small files, shaped like real ones, and their
// release history: a source tree (~5,000 files) and a Maildir.
//
//   const s = new Series(seed);     // release 1, in memory
//   s.write(dir);                   // dir/src and dir/Maildir as of release 1
//   s.next(); s.update(dir);        // release 2, applied to dir as a user's disk would see it
//
// The source tree of each release is written as a release tarball unpacks:
// dir/src is removed and every file written again (every inode and ctime
// changes, even where the content did not), with each file's mtime the date
// of the release that last changed it. The Maildir is updated in place, as a
// mail client does: new messages are written to new/, read ones renamed from
// new/ to cur/, a few deleted, a few flags changed.
import { createCipheriv, createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** sfc32 seeded from a string: fast and the same everywhere. */
export class Rng {
  constructor(seed) {
    const h = createHash('sha256').update(String(seed)).digest();
    this.s = [h.readUInt32LE(0), h.readUInt32LE(4), h.readUInt32LE(8), h.readUInt32LE(12)];
    this.seed = String(seed);
    for (let i = 0; i < 12; i++) this.u32();
  }
  u32() {
    const s = this.s;
    const t = (((s[0] + s[1]) >>> 0) + s[3]) >>> 0;
    s[3] = (s[3] + 1) >>> 0;
    s[0] = s[1] ^ (s[1] >>> 9);
    s[1] = (s[2] + (s[2] << 3)) >>> 0;
    s[2] = ((s[2] << 21) | (s[2] >>> 11)) >>> 0;
    s[2] = (s[2] + t) >>> 0;
    return t;
  }
  float() {
    return this.u32() / 4294967296;
  }
  int(n) {
    return Math.floor(this.float() * n);
  }
  range(lo, hi) {
    return lo + this.int(hi - lo + 1);
  }
  chance(p) {
    return this.float() < p;
  }
  pick(xs) {
    return xs[this.int(xs.length)];
  }
  /** A log-normal draw: median m, spread sigma (natural log). */
  lognormal(m, sigma) {
    const u = 1 - this.float();
    const v = this.float();
    return m * Math.exp(sigma * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v));
  }
  /** Incompressible bytes (AES-CTR under a key drawn from this stream). */
  bytes(n) {
    const key = Buffer.alloc(32);
    for (let i = 0; i < 8; i++) key.writeUInt32LE(this.u32(), i * 4);
    return createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(n));
  }
}

const SYL = 'ab ac ad al an ar as at be bi bo ca ce ch co cu da de di do du ea el em en er es et fa fe fi fo ga ge gi go ha he hi ho id il im in io ir is it ka ke la le li lo lu ma me mi mo mu na ne ni no nu ob od ol om on op or os ou pa pe pi po pu ra re ri ro ru sa se si so su ta te ti to tu ub ul um un ur us va ve vi vo xa ze zo'.split(' ');
const WORDS = 'the of and to in is that for it as with was on be by this are from or at which an not have has but all can if more one will would there their when what so out up about into than them only other its some time could these two may then do first any my now such like our over new also after most made many before must through back years where much your way well down should because each just those people how too little state good very make world still own see men work long get here between both life being under never day same another know while last might us great old year off come since against go came right used take three'.split(' ');
const KEYWORDS = ['const', 'let', 'return', 'if', 'else', 'for', 'while', 'function', 'static', 'struct', 'int', 'void', 'unsigned', 'char', 'size_t', 'uint32_t', 'bool', 'case', 'break', 'switch', 'goto', 'err'];
const EXT = ['.c', '.c', '.c', '.h', '.h', '.ts', '.js', '.py', '.rs', '.go', '.md', '.txt', '.json', '.S', '.sh'];
const BIN_EXT = ['.png', '.jpg', '.gz', '.o', '.so', '.ttf', '.woff2', '.bin', '.ico', '.pdf'];
const DIRS = 'src lib core net fs mm drivers block crypto tools scripts docs include arch kernel util test tests sound video usb pci gpu input char misc common internal api cmd pkg vendor third_party examples bench config build platform x86 arm64 riscv mips power generic legacy compat debug trace ipc security'.split(' ');

const LICENSE = `/*
 * SPDX-License-Identifier: GPL-2.0-only
 *
 * Copyright (C) 2019-2026 The Project Authors. All rights reserved.
 *
 * This program is free software; you can redistribute it and/or modify it
 * under the terms of the GNU General Public License version 2 as published
 * by the Free Software Foundation.
 */
`;

const ident = (rng) => {
  const n = rng.range(2, 4);
  let s = '';
  for (let i = 0; i < n; i++) s += rng.pick(SYL);
  return s;
};

/** A global vocabulary of identifiers; each file draws its own few dozen from it. */
function vocabulary(rng, n) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const a = ident(rng);
    out.push(rng.chance(0.5) ? `${a}_${ident(rng)}` : a);
  }
  return out;
}

/** Lines that look and compress like code: indentation, a file's own identifiers, keywords, comments. */
class CodeWriter {
  constructor(rng, vocab) {
    this.rng = rng;
    this.ids = Array.from({ length: rng.range(10, 30) }, () => rng.pick(vocab));
    this.depth = 0;
  }
  id() {
    return this.rng.pick(this.ids);
  }
  line() {
    const r = this.rng;
    const ind = '\t'.repeat(this.depth);
    const k = r.int(20);
    if (this.depth === 0) {
      if (k < 3) return `\n/* ${this.comment()} */\n`;
      if (k < 5) return `#define ${this.id().toUpperCase()} ${r.int(4096)}\n`;
      this.depth = 1;
      return `${r.pick(['static int', 'int', 'void', 'static void', 'bool', 'static size_t'])} ${this.id()}(${r.pick(['struct ', 'const struct ', ''])}${this.id()} *${this.id()}, ${r.pick(KEYWORDS.slice(6, 11))} ${this.id()})\n{\n`;
    }
    if (k < 3 && this.depth < 4) {
      this.depth++;
      return `${ind}${r.pick(['if', 'while', 'for'])} (${this.id()}${r.pick([' == ', ' != ', '->', ' < ', ' & '])}${this.id()}) {\n`;
    }
    if (k < 6) {
      this.depth--;
      return this.depth === 0 ? `${ind}return ${r.chance(0.5) ? '0' : this.id()};\n}\n\n` : `${ind.slice(1)}}\n`;
    }
    if (k < 8) return `${ind}/* ${this.comment()} */\n`;
    if (k < 12) return `${ind}${this.id()} = ${this.id()}(${this.id()}, ${r.int(256)});\n`;
    if (k < 15) return `${ind}${this.id()}->${this.id()} = ${this.id()};\n`;
    if (k < 17) return `${ind}err = ${this.id()}_${this.id()}(${this.id()}, "${this.comment()}");\n`;
    if (k < 19) return `${ind}if (err)\n${ind}\tgoto out_${this.id()};\n`;
    return `${ind}${r.pick(KEYWORDS.slice(6, 12))} ${this.id()} = ${r.int(1 << 16)};\n`;
  }
  comment() {
    const n = this.rng.range(3, 10);
    const w = [];
    for (let i = 0; i < n; i++) w.push(this.rng.pick(WORDS));
    return w.join(' ');
  }
  text(bytes) {
    // Joined once at the end: a string grown line by line is a rope the collector must walk.
    const parts = [LICENSE];
    let n = LICENSE.length;
    while (n < bytes) {
      const l = this.line();
      parts.push(l);
      n += l.length;
    }
    while (this.depth > 0) parts.push(this.line());
    return parts.join('');
  }
}

function message(rng, n, date) {
  const size = Math.min(50_000, Math.max(2_000, Math.round(rng.lognormal(5_000, 0.7))));
  const from = `${ident(rng)}@${rng.pick(['example.org', 'lists.example.net', 'mail.example.com'])}`;
  let s = `Return-Path: <${from}>\nReceived: from mx${rng.int(9)}.example.net (mx.example.net [192.0.2.${rng.int(255)}])\n\tby mail.example.org with ESMTPS id ${rng.u32().toString(16)}\n\tfor <me@example.org>; ${date.toUTCString()}\nFrom: ${from}\nTo: me@example.org\nSubject: ${WORDS[rng.int(WORDS.length)]} ${WORDS[rng.int(WORDS.length)]} #${n}\nDate: ${date.toUTCString()}\nMessage-ID: <${n}.${rng.u32().toString(36)}@example.org>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n`;
  const attach = rng.chance(0.15);
  const textBytes = attach ? Math.min(size, 1500 + rng.int(2000)) : size;
  const lines = [s];
  for (let len = s.length; len < textBytes; ) {
    const words = [];
    for (let i = rng.range(6, 14); i > 0; i--) words.push(rng.pick(WORDS));
    const line = `${rng.chance(0.2) ? '> ' : ''}${words.join(' ')}\n`;
    lines.push(line);
    len += line.length;
  }
  s = lines.join('');
  if (attach) s += `\n--b1\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n${rng.bytes(Math.max(600, Math.floor(((size - s.length) * 3) / 4))).toString('base64').replace(/.{76}/g, '$&\n')}\n--b1--\n`;
  return s;
}

const DAY = 86_400_000;
const releaseDate = (r) => new Date(Date.UTC(2026, 0, 1) + (r - 1) * 30 * DAY);

/**
 * One tree's history in memory. `files` maps a path (relative to the tree's
 * directory) to { data: string|Buffer, mode, mtime } or { link }; `dirs`
 * lists directories that must exist even when empty.
 */
export class Series {
  constructor(seed = 'trees', { files = 5000, messages = 3000 } = {}) {
    this.seed = seed;
    this.release = 1;
    this.rng = new Rng(`${seed} release 1`);
    this.vocab = vocabulary(this.rng, 2000);
    this.src = new Map();
    this.mail = new Map();
    this.msgN = 0;
    this.mailOps = null;
    this.makeSource(files);
    this.makeMaildir(messages);
  }

  makeSource(count) {
    const r = this.rng;
    const mtime = releaseDate(1);
    // A directory tree, 1-5 levels below the top, so file paths are 2-6 components deep.
    const dirs = [''];
    const depth = new Map([['', 0]]);
    while (dirs.length < Math.max(40, count / 12)) {
      const parent = r.pick(dirs);
      if (depth.get(parent) >= 5) continue;
      const d = parent ? `${parent}/${r.pick(DIRS)}` : r.pick(DIRS);
      if (depth.has(d)) continue;
      depth.set(d, depth.get(parent) + 1);
      dirs.push(d);
    }
    this.dirs = dirs.filter((d) => depth.get(d) >= 2);
    this.dirs.push(...dirs.filter((d) => depth.get(d) === 1).slice(0, 5));
    for (const name of ['README', 'COPYING', 'Makefile', 'ChangeLog', 'VERSION']) this.src.set(name, { data: '', mode: 0o644, mtime });
    this.src.get('COPYING').data = LICENSE.repeat(40);
    this.src.get('README').data = new CodeWriter(r, this.vocab).text(6000);
    this.src.get('Makefile').data = new CodeWriter(r, this.vocab).text(20000);
    this.src.get('ChangeLog').data = this.changelog(400);
    this.src.get('VERSION').data = '1.0.0\n';
    while (this.src.size < count) this.addFile(mtime);
    // A few symlinks: to files elsewhere in the tree, and one to a directory.
    const paths = [...this.src.keys()].filter((p) => p.includes('/'));
    for (let i = 0; i < 15; i++) {
      const target = r.pick(paths);
      const at = `${r.pick(this.dirs)}/${path.basename(target, path.extname(target))}-link${i}${path.extname(target)}`;
      if (!this.src.has(at)) this.src.set(at, { link: path.relative(path.dirname(at), target) });
    }
    this.src.set('LICENSE', { link: 'COPYING' });
    this.src.set('current', { link: this.dirs[0] });
  }

  /** A new file in a random directory: mostly text like code, a few large ones, a few binaries. */
  addFile(mtime) {
    const r = this.rng;
    const dir = r.pick(this.dirs);
    const k = r.float();
    let name;
    let data;
    let mode = 0o644;
    if (k < 0.03) {
      name = `${ident(r)}${r.pick(BIN_EXT)}`;
      const size = Math.round(Math.min(2 << 20, r.lognormal(40_000, 1.2)));
      // Half wholly incompressible (images, archives), half object-file-like: zeros, tables and random runs.
      data = r.chance(0.5) ? r.bytes(size) : Buffer.concat([Buffer.alloc(size >> 2), r.bytes(size >> 2), Buffer.from(new CodeWriter(r, this.vocab).text(size >> 1).slice(0, size >> 1))]);
    } else {
      const ext = r.pick(EXT);
      name = `${ident(r)}${r.chance(0.3) ? `_${ident(r)}` : ''}${ext}`;
      const size = k < 0.05 ? r.range(50_000, 500_000) : Math.max(300, Math.round(r.lognormal(5_000, 0.8)));
      data = new CodeWriter(r, this.vocab).text(size);
      if (ext === '.sh' || ext === '.py') mode = 0o755;
    }
    const p = `${dir}/${name}`;
    if (!this.src.has(p)) this.src.set(p, { data, mode, mtime });
    return p;
  }

  changelog(lines) {
    const r = this.rng;
    const out = [];
    for (let i = 0; i < lines; i++) out.push(`\t* ${r.pick(this.dirs)}: ${new CodeWriter(r, this.vocab).comment()}.\n${i % 8 === 7 ? '\n' : ''}`);
    return out.join('');
  }

  makeMaildir(count) {
    const r = this.rng;
    const start = releaseDate(1).getTime() - 400 * DAY;
    for (let i = 0; i < count; i++) {
      const t = new Date(start + (i / count) * 400 * DAY);
      const unread = i > count * 0.97;
      this.mail.set(this.mailName(t, unread ? 'new' : 'cur', r.chance(0.2) ? 'RS' : 'S'), { data: message(r, this.msgN++, t), mode: 0o600, mtime: t });
    }
  }

  mailName(t, box, flags) {
    const base = `${Math.floor(t.getTime() / 1000)}.M${this.rng.int(1e6)}P${this.rng.range(1000, 99999)}.mail.example.org,S=${this.msgN}`;
    return box === 'new' ? `new/${base}` : `cur/${base}:2,${flags}`;
  }

  /** The next release: edits, adds, removes and renames in the source tree; mail read, moved, deleted and received. */
  next() {
    this.release++;
    const r = (this.rng = new Rng(`${this.seed} release ${this.release}`));
    const mtime = releaseDate(this.release);
    const paths = [...this.src.keys()];
    const text = paths.filter((p) => typeof this.src.get(p).data === 'string');
    // 10-20 % of the files edited: a few lines inserted, changed or removed.
    const share = 0.1 + r.float() * 0.1;
    for (const p of text) {
      if (!r.chance(share)) continue;
      const f = this.src.get(p);
      const w = new CodeWriter(r, this.vocab);
      let s = f.data;
      for (let e = r.range(1, 4); e > 0; e--) {
        const at = s.indexOf('\n', r.int(s.length)) + 1;
        const end = s.indexOf('\n', at) + 1 || s.length;
        const k = r.int(3);
        let add = '';
        if (k < 2) for (let n = k === 0 ? r.range(1, 8) : 1; n > 0; n--) add += w.line();
        s = s.slice(0, at) + add + s.slice(k === 0 ? at : end);
      }
      this.src.set(p, { ...f, data: Buffer.from(s).toString(), mtime });
    }
    const set = (name, data) => this.src.set(name, { ...this.src.get(name), data, mtime });
    set('ChangeLog', this.changelog(r.range(20, 60)) + '\n' + this.src.get('ChangeLog').data);
    set('VERSION', `1.${this.release - 1}.0\n`);
    // A binary or two rebuilt.
    for (const p of paths.filter((q) => Buffer.isBuffer(this.src.get(q).data) && r.chance(0.02))) set(p, r.bytes(this.src.get(p).data.length));
    // Files added, removed and renamed.
    for (let i = r.range(5, 25); i > 0; i--) this.addFile(mtime);
    const plain = () => {
      const p = r.pick(paths);
      return this.src.get(p)?.data !== undefined && p.includes('/') ? p : undefined;
    };
    for (let i = r.range(3, 12); i > 0; i--) {
      const p = plain();
      if (p) this.src.delete(p);
    }
    for (let i = r.range(3, 12); i > 0; i--) {
      const p = plain();
      const to = p && `${r.chance(0.3) ? r.pick(this.dirs) : path.dirname(p)}/${ident(r)}${path.extname(p)}`;
      if (!p || this.src.has(to)) continue;
      this.src.set(to, this.src.get(p));
      this.src.delete(p);
    }
    // Mail: most of new/ read (renamed into cur/), a few deleted or flagged, new mail received.
    const ops = { moves: [], removes: [], adds: [] };
    const move = (from, to) => {
      this.mail.set(to, this.mail.get(from));
      this.mail.delete(from);
      ops.moves.push([from, to]);
    };
    for (const name of [...this.mail.keys()]) {
      if (name.startsWith('new/') && r.chance(0.7)) move(name, `cur/${name.slice(4)}:2,S`);
      else if (name.startsWith('cur/') && r.chance(0.004)) {
        this.mail.delete(name);
        ops.removes.push(name);
      } else if (name.endsWith(':2,S') && r.chance(0.005)) move(name, name.replace(/:2,S$/, ':2,RS'));
    }
    for (let i = r.range(100, 200); i > 0; i--) {
      const t = new Date(mtime.getTime() - r.int(30 * DAY));
      const name = this.mailName(t, 'new');
      this.mail.set(name, { data: message(r, this.msgN++, t), mode: 0o600, mtime: t });
      ops.adds.push(name);
    }
    this.mailOps = ops;
    return this;
  }

  /** Writes this release's trees under dir (dir/src, dir/Maildir), replacing any there. */
  write(dir) {
    this.writeSource(dir);
    const mail = path.join(dir, 'Maildir');
    fs.rmSync(mail, { recursive: true, force: true });
    for (const box of ['cur', 'new', 'tmp']) fs.mkdirSync(path.join(mail, box), { recursive: true, mode: 0o700 });
    for (const [name, f] of this.mail) writeFile(path.join(mail, name), f);
  }

  /** Brings dir from the previous release to this one: the source tree unpacked afresh, the Maildir changed in place. */
  update(dir) {
    this.writeSource(dir);
    const mail = path.join(dir, 'Maildir');
    for (const [from, to] of this.mailOps.moves) fs.renameSync(path.join(mail, from), path.join(mail, to));
    for (const name of this.mailOps.removes) fs.unlinkSync(path.join(mail, name));
    for (const name of this.mailOps.adds) writeFile(path.join(mail, name), this.mail.get(name));
  }

  writeSource(dir) {
    const src = path.join(dir, 'src');
    fs.rmSync(src, { recursive: true, force: true });
    const made = new Set();
    for (const [p, f] of this.src) {
      const d = path.dirname(path.join(src, p));
      if (!made.has(d)) {
        fs.mkdirSync(d, { recursive: true });
        made.add(d);
      }
      if (f.link !== undefined) fs.symlinkSync(f.link, path.join(src, p));
      else writeFile(path.join(src, p), f);
    }
  }

  /** Files, symlinks and bytes of this release. */
  stats() {
    let files = 0;
    let links = 0;
    let bytes = 0;
    for (const f of [...this.src.values(), ...this.mail.values()]) {
      if (f.link !== undefined) links++;
      else {
        files++;
        bytes += Buffer.byteLength(f.data);
      }
    }
    return { files, links, bytes, srcFiles: this.src.size, messages: this.mail.size };
  }

  /** A text file of this release, a few directories deep, for `cat` at an old version. */
  stableFile() {
    return [...this.src.keys()].find((p) => p.split('/').length >= 4 && typeof this.src.get(p).data === 'string' && this.src.get(p).data.length > 8000);
  }
}

function writeFile(file, f) {
  const fd = fs.openSync(file, 'w', f.mode);
  try {
    fs.writeSync(fd, f.data);
    fs.fchmodSync(fd, f.mode);
    fs.futimesSync(fd, f.mtime, f.mtime);
  } finally {
    fs.closeSync(fd);
  }
}

/** Release r of seed, written afresh under dir. */
export function writeRelease(dir, seed, r, options) {
  const s = new Series(seed, options);
  while (s.release < r) s.next();
  s.write(dir);
  return s;
}
