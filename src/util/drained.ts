import type { EventEmitter } from 'node:events';

/**
 * Settles when a writable (a request being sent, a response) can take more
 * (drain) or is gone (close): a write that returned false waits for it. Each
 * wait leaves no listener behind.
 */
export function drained(w: EventEmitter): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      w.off('drain', done);
      w.off('close', done);
      resolve();
    };
    w.on('drain', done);
    w.on('close', done);
  });
}
