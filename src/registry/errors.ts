/**
 * The one error type of the domain. It carries an OCI distribution-spec error code; src/http maps
 * codes to status codes and to the spec's `{"errors":[...]}` body in one place.
 */
export type ErrorCode =
  | "BLOB_UNKNOWN"
  | "BLOB_UPLOAD_INVALID"
  | "BLOB_UPLOAD_UNKNOWN"
  | "DIGEST_INVALID"
  | "MANIFEST_BLOB_UNKNOWN"
  | "MANIFEST_INVALID"
  | "MANIFEST_UNKNOWN"
  | "NAME_INVALID"
  | "NAME_UNKNOWN"
  | "SIZE_INVALID"
  | "TAG_INVALID"
  | "UNAUTHORIZED"
  | "DENIED"
  | "UNSUPPORTED"
  | "TOOMANYREQUESTS"
  | "RANGE_INVALID"
  | "PAGINATION_NUMBER_INVALID"
  | "NOT_FOUND"
  | "UNAVAILABLE";

export class RegistryError extends Error {
  readonly code: ErrorCode;
  readonly detail: unknown;
  /** Extra response headers the HTTP layer should send with this error (Range, WWW-Authenticate, ...). */
  readonly headers: Record<string, string>;
  /** An HTTP status other than the code's usual one (416 for an out-of-order chunk, 413 for a huge manifest). */
  readonly status: number | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    detail?: unknown,
    headers: Record<string, string> = {},
    status?: number,
  ) {
    super(message);
    this.name = "RegistryError";
    this.code = code;
    this.detail = detail;
    this.headers = headers;
    this.status = status;
  }
}

export function isRegistryError(err: unknown): err is RegistryError {
  return err instanceof RegistryError;
}
