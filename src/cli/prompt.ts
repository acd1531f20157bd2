/** A password prompt on the terminal that does not echo. */
import { interrupted } from '../errors.js';

/** What came after the Enter that ended the last answer (typed or pasted ahead), for the next prompt. */
let ahead = '';

export function promptHidden(question: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const stdin = process.stdin;
    process.stderr.write(question);
    let value = '';
    let listening = false;
    const done = (err?: Error) => {
      if (listening) {
        stdin.setRawMode?.(false);
        stdin.pause();
        stdin.removeListener('data', onData);
      }
      process.stderr.write('\n');
      if (err) reject(err);
      else resolve(value);
    };
    /** Takes characters until the answer ends; true when it has. */
    const take = (text: string): boolean => {
      const chars = [...text];
      for (let i = 0; i < chars.length; i++) {
        const ch = chars[i]!;
        if (ch === '\r' || ch === '\n' || ch === '\u0004') {
          let rest = i + 1;
          if (ch === '\r' && chars[rest] === '\n') rest++;
          ahead = chars.slice(rest).join('');
          done();
          return true;
        }
        if (ch === '\u0003') {
          ahead = '';
          done(interrupted());
          return true;
        }
        if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1);
        else value += ch;
      }
      return false;
    };
    const onData = (buf: Buffer) => {
      take(buf.toString('utf8'));
    };
    const pending = ahead;
    ahead = '';
    if (take(pending)) return;
    listening = true;
    stdin.setRawMode?.(true);
    stdin.resume();
    stdin.on('data', onData);
  });
}
