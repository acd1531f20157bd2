/** Writing a request body without holding more than the socket's buffer. */
import type * as http from 'node:http';

/** Settles when `req` can take more (drain) or is gone (close): a write that returned false waits for it. */
export function drained(req: http.ClientRequest): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      req.off('drain', done);
      req.off('close', done);
      resolve();
    };
    req.on('drain', done);
    req.on('close', done);
  });
}
