/**
 * The error classes of the client (SPEC §12's tree, the same as the Python SDK's), and
 * the one mapping from a broker's error answer to them:
 *
 *     VaultError
 *      ├── BrokerUnavailable       unreachable, timed out, circuit open
 *      └── BrokerError             the broker answered with an error body
 *           ├── BadRequest         bad_request, method_not_allowed, payload_too_large
 *           ├── TokenInvalid       token_invalid (and signature_invalid)
 *           ├── Forbidden          any other 403
 *           │    ├── ScopeDenied        scope_denied
 *           │    ├── PermissionDenied   permission_denied
 *           │    ├── UsageExhausted     usage_exhausted
 *           │    └── TokenRevoked       token_revoked
 *           ├── NotFound           not_found
 *           ├── RateLimited        rate_limited (with retryAfter)
 *           └── ServiceUnavailable any other 503
 *                ├── DecryptFailed      decrypt_failed
 *                ├── AuditUnavailable   audit_unavailable
 *                └── StateUnavailable   state_unavailable
 *
 * Every BrokerError carries `status`, `code`, `message` and `requestId`. A code not known
 * here is mapped by its HTTP status, so a newer broker still raises something sensible.
 * No error's text ever holds a token or a secret value.
 */

import type { Answer } from "./http.js";

/** Anything this client throws about the broker or its settings. */
export class VaultError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** The broker could not be reached, did not answer in time, or the circuit is open. */
export class BrokerUnavailable extends VaultError {}

/** The broker answered with an error body: `{"error": {code, message}, "request_id"}`. */
export class BrokerError extends VaultError {
  readonly status: number;
  readonly code: string;
  readonly requestId: string | null;

  constructor(status: number, code: string, message: string, requestId: string | null) {
    super(message);
    this.status = status;
    this.code = code;
    this.requestId = requestId;
  }

  /** The CLI's one line: `ScopeDenied: 403 scope_denied: ... (request_id ...)`. */
  override toString(): string {
    const text = `${this.name}: ${this.status} ${this.code}: ${this.message}`;
    return this.requestId ? `${text} (request_id ${this.requestId})` : text;
  }
}

/** 400 bad_request, 405 method_not_allowed, 413 payload_too_large. */
export class BadRequest extends BrokerError {}
/** 401: the token is missing, malformed, expired, badly signed or not ours. */
export class TokenInvalid extends BrokerError {}
/** 403: the token is valid but may not do this. */
export class Forbidden extends BrokerError {}
/** 403 scope_denied: outside the token's environment, pattern or permissions. */
export class ScopeDenied extends Forbidden {}
/** 403 permission_denied: the token lacks the permission the endpoint needs. */
export class PermissionDenied extends Forbidden {}
/** 403 usage_exhausted: the token's usage limit is used up. */
export class UsageExhausted extends Forbidden {}
/** 403 token_revoked. */
export class TokenRevoked extends Forbidden {}
/** 404: environment, key, version or endpoint not found. */
export class NotFound extends BrokerError {}

/** 429 rate_limited; `retryAfter` is the broker's Retry-After in seconds, if given. */
export class RateLimited extends BrokerError {
  readonly retryAfter: number | null;

  constructor(
    status: number,
    code: string,
    message: string,
    requestId: string | null,
    retryAfter: number | null = null,
  ) {
    super(status, code, message, requestId);
    this.retryAfter = retryAfter;
  }
}

/** 503: the broker cannot serve the request right now. */
export class ServiceUnavailable extends BrokerError {}
/** 503 decrypt_failed. */
export class DecryptFailed extends ServiceUnavailable {}
/** 503 audit_unavailable: no audit record, so no answer. */
export class AuditUnavailable extends ServiceUnavailable {}
/** 503 state_unavailable: usage counts and revocations cannot be checked. */
export class StateUnavailable extends ServiceUnavailable {}

type BrokerErrorClass = new (
  status: number,
  code: string,
  message: string,
  requestId: string | null,
) => BrokerError;

const BY_CODE: Record<string, BrokerErrorClass> = {
  bad_request: BadRequest,
  method_not_allowed: BadRequest,
  payload_too_large: BadRequest,
  token_invalid: TokenInvalid,
  signature_invalid: TokenInvalid,
  scope_denied: ScopeDenied,
  permission_denied: PermissionDenied,
  usage_exhausted: UsageExhausted,
  token_revoked: TokenRevoked,
  not_found: NotFound,
  rate_limited: RateLimited,
  decrypt_failed: DecryptFailed,
  audit_unavailable: AuditUnavailable,
  state_unavailable: StateUnavailable,
};

const BY_STATUS: Record<number, BrokerErrorClass> = {
  400: BadRequest,
  401: TokenInvalid,
  403: Forbidden,
  404: NotFound,
  405: BadRequest,
  413: BadRequest,
  429: RateLimited,
  503: ServiceUnavailable,
};

/** The error for an error answer; its class comes from the code, else the status. */
export function errorFromAnswer(answer: Answer): BrokerError {
  const { status } = answer;
  let requestId = answer.header("x-request-id") || null;
  let code = `http_${status}`;
  let message = `unexpected answer (HTTP ${status})`;
  const body = parseJson(answer.body);
  if (isRecord(body)) {
    const error = body["error"];
    if (isRecord(error) && typeof error["code"] === "string") {
      code = error["code"];
      message = String(error["message"] || code);
    }
    if (typeof body["request_id"] === "string") {
      requestId = body["request_id"];
    }
  }
  const cls = (Object.hasOwn(BY_CODE, code) ? BY_CODE[code] : BY_STATUS[status]) ?? BrokerError;
  if (cls === RateLimited) {
    return new RateLimited(status, code, message, requestId, retryAfter(answer));
  }
  return new cls(status, code, message, requestId);
}

function retryAfter(answer: Answer): number | null {
  const raw = answer.header("retry-after");
  return /^\d+$/.test(raw) ? Number(raw) : null;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
