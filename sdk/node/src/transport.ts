/**
 * How a VaultClient sends a request (SPEC §12, §18): cache, single flight, circuit breaker,
 * retries, stale answers. The one path every request takes.
 *
 * A read (`cache: true`) is answered from memory while fresh; identical reads in flight at
 * once share one request; while the breaker is open calls fail fast; transport errors and
 * 502/503/504 are retried (retry.ts; a POST only while it cannot have been carried out);
 * when the broker stays unreachable or keeps answering 502/503/504, a cached answer up to
 * `maxStaleMs` old is returned and a warning logged. A 401 or 403 empties the cache.
 */

import { CircuitBreaker, isRefusal, type Admission, type Refusal } from "./breaker.js";
import { AnswerCache, SingleFlight } from "./cache.js";
import { BrokerUnavailable, VaultError, errorFromAnswer } from "./errors.js";
import { Answer, HttpTransport, TransportFailure, type Request } from "./http.js";
import { RETRY_STATUSES, sendWithRetries, type RetryPolicy } from "./retry.js";
import { safeUrl, type Settings } from "./settings.js";

/** Where the client's log lines go: `console` fits; `debug` (each retry) is optional. */
export interface Logger {
  warn(message: string): void;
  debug?(message: string): void;
}

export interface TransportOptions {
  timeoutMs: number;
  retry: RetryPolicy;
  cache: AnswerCache<Answer>;
  breaker: CircuitBreaker;
  logger: Logger;
}

// What a bearer token may hold: visible ASCII (a line break would forge a header).
const TOKEN_CHARACTERS = /^[\x21-\x7e]+$/;

export class Transport {
  private readonly http: HttpTransport;
  private readonly flights = new SingleFlight<Answer>();
  private readonly where: string;
  private readonly badToken: boolean;

  constructor(
    settings: Settings,
    token: string | null,
    private readonly options: TransportOptions,
  ) {
    this.badToken = token !== null && !TOKEN_CHARACTERS.test(token);
    this.http = new HttpTransport(settings, token === null ? null : `Bearer ${token}`);
    this.where = safeUrl(settings.url);
  }

  close(): void {
    this.http.close();
  }

  /** A 2xx answer, or a VaultError. Reads (`cache`) come from the cache while fresh, and
   * identical reads in flight at once share one request. */
  async send(request: Request, cache: boolean): Promise<Answer> {
    if (this.badToken) {
      throw new VaultError("the token holds characters a bearer token cannot have");
    }
    if (!(cache && this.options.cache.enabled)) return this.call(request, null);
    const key = cacheKey(request);
    const hit = this.options.cache.fresh(key);
    if (hit !== undefined) return hit;
    return this.flights.run(key, async () => {
      // Another flight may have filled the cache between our look and our turn.
      return this.options.cache.fresh(key) ?? this.call(request, key);
    });
  }

  /** One call through the breaker and the retries; the stale answer when it fails. */
  private async call(request: Request, key: string | null): Promise<Answer> {
    const { breaker, retry, logger } = this.options;
    const admission = breaker.admit();
    if (isRefusal(admission)) return this.staleOrThrow(key, request, this.circuitOpen(admission));
    let answer: Answer;
    try {
      answer = await sendWithRetries(
        () => this.http.attempt(request, this.options.timeoutMs),
        retry,
        request.method === "GET",
        (attempt, what, waitMs) =>
          logger.debug?.(
            `attempt ${attempt} failed (${what}); retrying in ${Math.round(waitMs)}ms`,
          ),
      );
    } catch (error) {
      if (error instanceof TransportFailure) {
        breaker.failed(admission);
        return this.staleOrThrow(key, request, this.unreachable(error));
      }
      breaker.abandoned(admission);
      throw error;
    }
    return this.settle(admission, answer, key, request);
  }

  private settle(
    admission: Admission,
    answer: Answer,
    key: string | null,
    request: Request,
  ): Answer {
    const { breaker, cache } = this.options;
    if (RETRY_STATUSES.has(answer.status)) {
      breaker.failed(admission);
      return this.staleOrThrow(key, request, errorFromAnswer(answer));
    }
    breaker.succeeded(admission);
    if (answer.status === 401 || answer.status === 403) {
      cache.clear(); // this token may read nothing more from memory either
    }
    if (answer.status < 200 || answer.status >= 300) throw errorFromAnswer(answer);
    if (key !== null) cache.put(key, answer);
    return answer;
  }

  private unreachable(failure: TransportFailure): BrokerUnavailable {
    if (failure.timedOut) {
      const seconds = this.options.timeoutMs / 1000;
      return new BrokerUnavailable(`the broker at ${this.where} did not answer within ${seconds}s`);
    }
    return new BrokerUnavailable(`cannot reach the broker at ${this.where}: ${failure.reason}`);
  }

  private circuitOpen(refusal: Refusal): BrokerUnavailable {
    const then =
      refusal.retryInMs > 0
        ? `next try in ${(refusal.retryInMs / 1000).toFixed(1)}s`
        : "a trial call is under way";
    return new BrokerUnavailable(
      `circuit open: the broker at ${this.where} failed ${refusal.failures} calls in a row (${then})`,
    );
  }

  /** A cached answer up to `maxStaleMs` old, with a warning; else throw `error`. */
  private staleOrThrow(key: string | null, request: Request, error: VaultError): Answer {
    const { cache, logger } = this.options;
    const entry = key === null ? undefined : cache.stale(key);
    if (entry === undefined) throw error;
    const age = (cache.age(entry) / 1000).toFixed(1);
    const what = error instanceof BrokerUnavailable ? error.message : String(error);
    logger.warn(
      `serving a cached answer ${age}s old for ${request.method} ${request.path}: ${what}`,
    );
    return entry.answer;
  }
}

function cacheKey(request: Request): string {
  const body = request.json === undefined ? "" : JSON.stringify(request.json);
  return `${request.method} ${request.path} ${body}`;
}
