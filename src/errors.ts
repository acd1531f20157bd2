/**
 * Typed errors. Every failure a user can cause or meet is a StrataError with a
 * stable `code` and the process exit code it maps to; the CLI prints the
 * message on one line and exits with `exitCode`. Anything else is a bug.
 */

/** Exit codes, following restic's where they overlap. */
export const ExitCode = {
  ok: 0,
  error: 1,
  usage: 2,
  incomplete: 3,
  noRepository: 10,
  locked: 11,
  wrongKey: 12,
  interrupted: 130,
} as const;

export class StrataError extends Error {
  readonly code: string;
  readonly exitCode: number;
  readonly data: Record<string, unknown>;

  constructor(code: string, message: string, exitCode: number = ExitCode.error, data: Record<string, unknown> = {}) {
    super(message);
    this.name = 'StrataError';
    this.code = code;
    this.exitCode = exitCode;
    this.data = data;
  }

  toJSON(): Record<string, unknown> {
    return { error: this.code, message: this.message, ...this.data };
  }
}

export const usageError = (message: string) => new StrataError('usage', message, ExitCode.usage);
export const notFound = (message: string) => new StrataError('not_found', message);
export const noRepository = (message: string) => new StrataError('no_repository', message, ExitCode.noRepository);
export const wrongKey = (message: string) => new StrataError('wrong_key', message, ExitCode.wrongKey);
export const locked = (message: string) => new StrataError('locked', message, ExitCode.locked);
export const integrity = (message: string, data: Record<string, unknown> = {}) =>
  new StrataError('integrity', message, ExitCode.error, data);
export const rangeNotSatisfiable = (message: string) => new StrataError('range_not_satisfiable', message);
export const interrupted = () => new StrataError('interrupted', 'interrupted', ExitCode.interrupted);
