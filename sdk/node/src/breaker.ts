/**
 * The circuit breaker (SPEC §12): after enough consecutive failures, fail fast.
 *
 * Closed: every call goes through; `threshold` failures in a row open it. Open: calls are
 * refused at once for `cooldownMs`; then exactly one trial call is let through while the
 * others keep being refused, and its outcome closes or reopens the breaker.
 */

/** A call the breaker let through; `trial` when it decides the breaker's fate. */
export interface Admission {
  readonly trial: boolean;
}

/** Why a call was refused: for the one-line error the caller throws. */
export interface Refusal {
  readonly failures: number;
  readonly retryInMs: number; // until a trial call may go (0: one is in flight now)
}

export type BreakerState = "closed" | "open" | "half-open";

export class CircuitBreaker {
  private failures = 0;
  private openedAt: number | null = null; // null: closed
  private trialInFlight = false;

  /** `threshold` 0 turns the breaker off (every call is admitted). */
  constructor(
    readonly threshold: number,
    readonly cooldownMs: number,
    private readonly clock: () => number = () => performance.now(),
  ) {}

  /** "closed"; "open" (refusing, cooling down); "half-open" (the cooldown is over: the
   * next call, or the one under way, is the trial). */
  get state(): BreakerState {
    if (this.openedAt === null) return "closed";
    if (this.trialInFlight || this.clock() - this.openedAt >= this.cooldownMs) return "half-open";
    return "open";
  }

  /** Let a call through, or say why not. */
  admit(): Admission | Refusal {
    if (this.openedAt === null) return { trial: false };
    const waited = this.clock() - this.openedAt;
    if (waited < this.cooldownMs) {
      return { failures: this.failures, retryInMs: this.cooldownMs - waited };
    }
    if (this.trialInFlight) return { failures: this.failures, retryInMs: 0 };
    this.trialInFlight = true;
    return { trial: true };
  }

  /** The call failed the way that counts: unreachable, or 502/503/504 after retries. */
  failed(admission: Admission): void {
    if (admission.trial) {
      this.trialInFlight = false;
      this.openedAt = this.clock();
      return;
    }
    if (this.openedAt !== null) return; // a straggler from before the breaker opened
    this.failures += 1;
    if (this.threshold && this.failures >= this.threshold) this.openedAt = this.clock();
  }

  /** The broker answered (with anything but 502/503/504): the count starts again. */
  succeeded(admission: Admission): void {
    if (admission.trial) {
      this.trialInFlight = false;
      this.openedAt = null;
    }
    if (this.openedAt === null) this.failures = 0;
  }

  /** The call ended without reaching the broker for a reason of its own (unreadable TLS
   * files): no verdict, and the next caller may make the trial. */
  abandoned(admission: Admission): void {
    if (admission.trial) this.trialInFlight = false;
  }
}

export function isRefusal(outcome: Admission | Refusal): outcome is Refusal {
  return "retryInMs" in outcome;
}
