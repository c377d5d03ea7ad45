/**
 * Retries (SPEC §12, as the Python SDK's cli/client_retry.py): transport errors and
 * 502/503/504 only, exponential backoff with full jitter, each attempt bounded by the
 * client's timeout.
 *
 * A POST (a batch read) may have been carried out when its answer was lost: a second
 * attempt would use a usage-limited token twice. So a POST is retried only when it
 * provably never reached the broker (refused, or no connection in time) or when the
 * broker answered 503 (it refused the request and counted nothing); a reset or a timeout
 * after sending, a 502 or a 504 end it.
 */

import { Answer, TransportFailure } from "./http.js";

export const RETRY_STATUSES: ReadonlySet<number> = new Set([502, 503, 504]);

/** `retries` more attempts after the first; the n-th waits a time drawn uniformly from
 * 0 to min(`backoffMaxMs`, `backoffMs` * 2 ** (n - 1)) ("full jitter"). */
export interface RetryPolicy {
  retries: number;
  backoffMs: number;
  backoffMaxMs: number;
}

/** What the retry loop reports before each wait (for a debug log line). */
export type RetryListener = (attempt: number, what: string, waitMs: number) => void;

/** A transport failure worth another attempt: not a TLS failure (a certificate does not
 * become valid by asking again). */
export function isTransient(failure: TransportFailure): boolean {
  return !failure.tls;
}

/** The full-jitter wait before attempt `attempt + 1` (`attempt` counts from 1). */
export function backoffDelay(attempt: number, policy: RetryPolicy, random = Math.random): number {
  const ceiling = Math.min(policy.backoffMaxMs, policy.backoffMs * 2 ** (attempt - 1));
  return random() * ceiling;
}

/**
 * The first answer that is not 502/503/504, else the last one; or the last transport
 * failure, thrown. Anything else thrown by `attempt` is thrown at once. Not `idempotent`
 * (a POST): only requests never sent and 503 answers are tried again.
 */
export async function sendWithRetries(
  attempt: () => Promise<Answer>,
  policy: RetryPolicy,
  idempotent: boolean,
  onRetry: RetryListener,
): Promise<Answer> {
  for (let n = 1; ; n++) {
    let outcome: Answer | TransportFailure;
    try {
      outcome = await attempt();
    } catch (error) {
      if (!(error instanceof TransportFailure)) throw error;
      outcome = error;
    }
    const again =
      outcome instanceof Answer
        ? idempotent
          ? RETRY_STATUSES.has(outcome.status)
          : outcome.status === 503
        : idempotent
          ? isTransient(outcome)
          : outcome.neverSent && isTransient(outcome);
    if (!again || n > policy.retries) {
      if (outcome instanceof TransportFailure) throw outcome;
      return outcome;
    }
    const waitMs = backoffDelay(n, policy);
    const what = outcome instanceof Answer ? `HTTP ${outcome.status}` : outcome.reason;
    onRetry(n, what, waitMs);
    await new Promise((resolve) => setTimeout(resolve, waitMs));
  }
}
