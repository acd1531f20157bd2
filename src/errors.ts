/**
 * Typed errors. Every failure a user can cause or meet is a StrataError with a
 * stable `code` from the table below, which gives its process exit code and
 * the HTTP status a server answers it with; the CLI prints the message on one
 * line and exits with `exitCode`. Anything else is a bug.
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

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** What each exit code means, as help, the README and the man page say it. */
export const EXIT_MEANINGS: Record<ExitCodeValue, string> = {
  0: 'success',
  1: 'error',
  2: 'usage error (bad option or argument)',
  3: 'incomplete: a backup could not read some sources (the snapshot is partial), or a restore left some paths as they were',
  10: 'no repository at the given location',
  11: 'repository is locked',
  12: 'wrong password or key, or no password given',
  130: 'interrupted',
};

interface ErrorRow {
  exit: ExitCodeValue;
  /** What `strata serve` answers with; 5xx: the server's own failure, whose message stays in its log. */
  http: number;
}

const { error, usage } = ExitCode;

/**
 * Every error code. A client turns a server's `{error: CODE}` back into the
 * same code, so a command exits alike on a directory and over a server.
 */
export const ERRORS = {
  // The command line or a request is wrong.
  usage: { exit: usage, http: 400 },
  password_mismatch: { exit: usage, http: 400 },
  bad_key_file: { exit: usage, http: 400 },
  // A command that runs only where the repository is, asked of a server.
  local_only: { exit: usage, http: 409 },
  ambiguous: { exit: error, http: 400 },
  is_directory: { exit: error, http: 400 },
  not_file: { exit: error, http: 400 },
  not_directory: { exit: error, http: 400 },
  no_sources: { exit: error, http: 400 },
  bad_request: { exit: error, http: 400 },
  bad_json: { exit: error, http: 400 },
  bad_name: { exit: error, http: 400 },
  bad_version: { exit: error, http: 400 },
  // On a server, an upload that ends before its Content-Length: the request's fault.
  short_read: { exit: error, http: 400 },
  method_not_allowed: { exit: error, http: 405 },
  length_required: { exit: error, http: 411 },
  body_too_large: { exit: error, http: 413 },
  range_not_satisfiable: { exit: error, http: 416 },
  // A file asked for as one kind of dataset (strata items, item, sql) that is another.
  wrong_format: { exit: error, http: 415 },
  headers_too_large: { exit: error, http: 431 },
  request_timeout: { exit: error, http: 408 },

  // Something named is not there.
  not_found: { exit: error, http: 404 },
  no_route: { exit: error, http: 404 },
  no_kind: { exit: error, http: 404 },
  no_repository: { exit: ExitCode.noRepository, http: 404 },

  // Who may do what. A server never checks a repository key (it holds none);
  // were one reported, 403: a 401 says the token was refused.
  wrong_key: { exit: ExitCode.wrongKey, http: 403 },
  // A refused token is, to the user, a wrong credential: 12 as a wrong key.
  unauthorized: { exit: ExitCode.wrongKey, http: 401 },
  forbidden: { exit: error, http: 403 },

  // The repository's state is in the way. 409 for locked and integrity is
  // what docs/openapi.yaml promises clients.
  locked: { exit: ExitCode.locked, http: 409 },
  integrity: { exit: error, http: 409 },
  exists: { exit: error, http: 409 },
  conflict: { exit: error, http: 409 },
  stale_target: { exit: error, http: 409 },
  missing_blocks: { exit: error, http: 409 },
  no_lease: { exit: error, http: 409 },
  not_pending: { exit: error, http: 409 },
  no_pack: { exit: error, http: 409 },
  last_key: { exit: error, http: 409 },
  key_in_use: { exit: error, http: 409 },
  unsafe_path: { exit: error, http: 409 },

  // Failures of the machine, not of the request.
  // FUSE (strata mount) is not installed or usable here; a mountpoint that cannot take a mount.
  no_fuse: { exit: error, http: 501 },
  mountpoint: { exit: error, http: 409 },
  no_space: { exit: error, http: 507 },
  insufficient_storage: { exit: error, http: 507 },
  io: { exit: error, http: 500 },
  format: { exit: error, http: 500 },
  read_only: { exit: error, http: 500 },
  catalog: { exit: error, http: 500 },
  catalog_damaged: { exit: error, http: 500 },
  key_export: { exit: error, http: 500 },
  tokens: { exit: error, http: 500 },
  listen: { exit: error, http: 500 },
  internal: { exit: error, http: 500 },
  // A server's answer this client cannot place (an unknown code, a proxy's page).
  remote: { exit: error, http: 502 },
  // A request cut short by the server shutting down.
  interrupted: { exit: ExitCode.interrupted, http: 503 },
} as const satisfies Record<string, ErrorRow>;

export type ErrorCode = keyof typeof ERRORS;

export const ERROR_CODES = Object.keys(ERRORS) as ErrorCode[];

export function isErrorCode(s: unknown): s is ErrorCode {
  return typeof s === 'string' && Object.hasOwn(ERRORS, s);
}

export function httpStatus(code: ErrorCode): number {
  return ERRORS[code].http;
}

export class StrataError extends Error {
  readonly code: ErrorCode;
  readonly exitCode: ExitCodeValue;
  readonly data: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, data: Record<string, unknown> = {}) {
    super(message);
    this.name = 'StrataError';
    this.code = code;
    this.exitCode = ERRORS[code].exit;
    this.data = data;
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
export const integrity = (message: string, data: Record<string, unknown> = {}) => new StrataError('integrity', message, data);
export const rangeNotSatisfiable = (message: string) => new StrataError('range_not_satisfiable', message);
export const interrupted = () => new StrataError('interrupted', 'interrupted');
