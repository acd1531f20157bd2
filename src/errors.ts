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

/** What each exit code means (the CLI's help and the docs say the same). */
export const EXIT_MEANINGS: Record<number, string> = {
  0: 'success',
  1: 'error',
  2: 'usage error (bad option or argument)',
  3: 'incomplete: a backup could not read some sources (the snapshot is partial), or a restore left some paths as they were',
  10: 'no repository at the given location',
  11: 'repository is locked',
  12: 'wrong password or key, or no password given',
  130: 'interrupted',
};

const row = (exit: number, http: number) => ({ exit, http });

/**
 * Every error code: its exit code, and the HTTP status a server answers it
 * with. The CLI, the server and the remote client all read this one table,
 * so an error keeps its exit code over a server.
 */
export const ERRORS = {
  // What was asked is wrong.
  usage: row(ExitCode.usage, 400),
  ambiguous: row(ExitCode.error, 400),
  password_mismatch: row(ExitCode.usage, 400),
  bad_key_file: row(ExitCode.usage, 400),
  local_only: row(ExitCode.usage, 409),
  range_not_satisfiable: row(ExitCode.error, 416),
  not_found: row(ExitCode.error, 404),
  not_file: row(ExitCode.error, 400),
  is_directory: row(ExitCode.error, 400),
  no_sources: row(ExitCode.error, 400),
  // Where the repository is, and who may open it.
  no_repository: row(ExitCode.noRepository, 404),
  exists: row(ExitCode.error, 409),
  format: row(ExitCode.error, 400),
  wrong_key: row(ExitCode.wrongKey, 401),
  unauthorized: row(ExitCode.wrongKey, 401),
  forbidden: row(ExitCode.error, 403),
  last_key: row(ExitCode.error, 409),
  key_in_use: row(ExitCode.error, 409),
  key_export: row(ExitCode.error, 400),
  tokens: row(ExitCode.error, 500),
  // Others at work on the repository.
  locked: row(ExitCode.locked, 409),
  no_lease: row(ExitCode.error, 409),
  stale_target: row(ExitCode.error, 409),
  missing_blocks: row(ExitCode.error, 409),
  conflict: row(ExitCode.error, 409),
  // Damage: never wrong bytes, this instead.
  integrity: row(ExitCode.error, 409),
  catalog_damaged: row(ExitCode.error, 500),
  catalog: row(ExitCode.error, 500),
  read_only: row(ExitCode.error, 500),
  unsafe_path: row(ExitCode.error, 400),
  bad_version: row(ExitCode.error, 400),
  // Storage and the network.
  short_read: row(ExitCode.error, 400),
  io: row(ExitCode.error, 502),
  insufficient_storage: row(ExitCode.error, 507),
  no_space: row(ExitCode.error, 507),
  listen: row(ExitCode.error, 500),
  // What a server says of a request it could not take.
  bad_request: row(ExitCode.error, 400),
  bad_name: row(ExitCode.error, 400),
  bad_json: row(ExitCode.error, 400),
  body_too_large: row(ExitCode.error, 413),
  length_required: row(ExitCode.error, 411),
  method_not_allowed: row(ExitCode.error, 405),
  no_route: row(ExitCode.error, 404),
  no_kind: row(ExitCode.error, 404),
  not_pending: row(ExitCode.error, 409),
  no_pack: row(ExitCode.error, 409),
  // The rest.
  remote: row(ExitCode.error, 502),
  internal: row(ExitCode.error, 500),
  interrupted: row(ExitCode.interrupted, 500),
} as const;

export type ErrorCode = keyof typeof ERRORS;

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.prototype.hasOwnProperty.call(ERRORS, code);
}

export class StrataError extends Error {
  readonly code: ErrorCode;
  readonly exitCode: number;
  readonly data: Record<string, unknown>;

  /** The exit code comes from the table (ERRORS); `exitCode` is kept for callers that still pass it and must agree. */
  constructor(code: ErrorCode, message: string, exitCode: number = ERRORS[code].exit, data: Record<string, unknown> = {}) {
    super(message);
    this.name = 'StrataError';
    this.code = code;
    this.exitCode = exitCode;
    this.data = data;
  }

  /** The HTTP status a server answers this error with. */
  get httpStatus(): number {
    return ERRORS[this.code].http;
  }

  /**
   * An error a server sent as `{ error, message }`: the same code, so the
   * same exit code as locally. A code this version does not know is "remote".
   */
  static fromWire(code: unknown, message: string): StrataError {
    return new StrataError(isErrorCode(code) ? code : 'remote', message);
  }

  toJSON(): Record<string, unknown> {
    return { error: this.code, message: this.message, ...this.data };
  }
}

export const usageError = (message: string) => new StrataError('usage', message);
export const notFound = (message: string) => new StrataError('not_found', message);
export const noRepository = (message: string) => new StrataError('no_repository', message);
export const wrongKey = (message: string) => new StrataError('wrong_key', message);
export const locked = (message: string) => new StrataError('locked', message);
export const integrity = (message: string, data: Record<string, unknown> = {}) =>
  new StrataError('integrity', message, ExitCode.error, data);
export const rangeNotSatisfiable = (message: string) => new StrataError('range_not_satisfiable', message);
export const interrupted = () => new StrataError('interrupted', 'interrupted');
