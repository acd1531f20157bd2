/**
 * Ctrl-C: the first interrupt asks the running command to stop at a safe
 * point (it keeps what it stored and exits 130); a second one exits at once.
 */
import { ExitCode } from '../errors.js';

let controller: AbortController | undefined;

export function interruptSignal(): AbortSignal {
  if (!controller) {
    controller = new AbortController();
    const onSignal = () => {
      if (controller!.signal.aborted) process.exit(ExitCode.interrupted);
      process.stderr.write('\ninterrupted: stopping safely (press Ctrl-C again to quit at once)\n');
      controller!.abort();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
  return controller.signal;
}
