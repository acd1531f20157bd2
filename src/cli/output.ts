/**
 * Output conventions: results on stdout (one JSON document with --json),
 * warnings and errors on stderr, progress (ora) only on a terminal and never
 * with --quiet or --json; NO_COLOR honoured.
 */
import chalk from 'chalk';
import type { Ora } from 'ora';
import { formatBytes } from '../util/size.js';
import type { GlobalOptions } from './context.js';

if (process.env.NO_COLOR !== undefined && process.env.NO_COLOR !== '') chalk.level = 0;

export { chalk };

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

export function line(text = ''): void {
  process.stdout.write(text + '\n');
}

/** Many lines, written 64 KiB at a time: a listing of 100k entries is otherwise 100k writes. */
export function lines(texts: Iterable<string>): void {
  let chunk = '';
  for (const text of texts) {
    chunk += text + '\n';
    if (chunk.length >= 64 * 1024) {
      process.stdout.write(chunk);
      chunk = '';
    }
  }
  if (chunk.length > 0) process.stdout.write(chunk);
}

export function warn(text: string): void {
  process.stderr.write(chalk.yellow('warning: ') + text + '\n');
}

export function wantsProgress(g: GlobalOptions): boolean {
  // A terminal that reports no width (some pseudo-terminals) cannot host a spinner line.
  return !g.json && !g.quiet && process.stderr.isTTY === true && (process.stderr.columns ?? 0) > 0;
}

/** A throttled spinner showing bytes, rate and ETA; a no-op off a terminal. */
export class Progress {
  private spinner?: Ora;
  private readonly started = Date.now();
  private last = 0;

  private stopped = false;

  constructor(enabled: boolean, text: string) {
    // Loaded only on a terminal: commands in scripts start faster without it.
    if (enabled) {
      void import('ora').then(({ default: ora }) => {
        if (!this.stopped) this.spinner = ora({ text, stream: process.stderr, discardStdin: false }).start();
      });
    }
  }

  update(done: number, total: number | undefined, extra = ''): void {
    if (!this.spinner) return;
    const now = Date.now();
    if (now - this.last < 100) return;
    this.last = now;
    const secs = (now - this.started) / 1000;
    const rate = secs > 0 ? done / secs : 0;
    let text = `${formatBytes(done)}`;
    if (total !== undefined && total > 0) {
      const pct = Math.min(100, (done / total) * 100);
      const eta = rate > 0 ? Math.max(0, (total - done) / rate) : undefined;
      text += ` / ${formatBytes(total)} (${pct.toFixed(1)}%)`;
      if (eta !== undefined) text += `, ETA ${formatDuration(eta)}`;
    }
    text += `, ${formatBytes(rate)}/s`;
    if (extra) text += `, ${extra}`;
    this.spinner.text = text;
  }

  /** Shows a status message on the spinner. */
  text(message: string): void {
    if (this.spinner) this.spinner.text = message;
  }

  /** Prints a warning without tearing the spinner line. */
  warn(text: string): void {
    if (this.spinner) this.spinner.clear();
    warn(text);
    if (this.spinner) this.spinner.render();
  }

  /** Prints a line of output (stdout) without tearing the spinner line. */
  line(text: string): void {
    if (this.spinner) this.spinner.clear();
    line(text);
    if (this.spinner) this.spinner.render();
  }

  stop(): void {
    this.stopped = true;
    this.spinner?.stop();
    this.spinner = undefined;
  }
}

export function formatDuration(seconds: number): string {
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export function plural(n: number, word: string, many = word + 's'): string {
  return `${n} ${n === 1 ? word : many}`;
}

export function shortId(id: string): string {
  return id.slice(0, 8);
}

export function formatTime(ms: number): string {
  const d = new Date(ms);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}
