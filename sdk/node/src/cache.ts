/**
 * The answer cache (SPEC §12) and the single flight that keeps concurrent calls from
 * asking the broker the same question at once.
 *
 * An answer younger than `ttlMs` is served without a request (so without using one of a
 * limited token's uses); one up to `maxStaleMs` old is kept for when the broker is down.
 * Ages count from when the answer was fetched.
 */

export const MAX_ENTRIES = 4096; // least recently used answers go first past this

export interface Cached<T> {
  readonly answer: T;
  readonly fetchedAt: number;
}

/** Answers by request; `ttlMs` 0 keeps nothing. */
export class AnswerCache<T> {
  private readonly entries = new Map<string, Cached<T>>(); // oldest use first

  constructor(
    readonly ttlMs: number,
    readonly maxStaleMs: number,
    private readonly clock: () => number = () => performance.now(),
    private readonly maxEntries = MAX_ENTRIES,
  ) {}

  get enabled(): boolean {
    return this.ttlMs > 0;
  }

  /** The answer if it was fetched less than `ttlMs` ago. */
  fresh(key: string): T | undefined {
    return this.entry(key, this.ttlMs, false)?.answer;
  }

  /** The entry if it was fetched at most `maxStaleMs` ago (for when the broker fails). */
  stale(key: string): Cached<T> | undefined {
    return this.entry(key, this.maxStaleMs, true);
  }

  age(entry: Cached<T>): number {
    return this.clock() - entry.fetchedAt;
  }

  put(key: string, answer: T): void {
    if (!this.enabled) return;
    this.entries.delete(key);
    this.entries.set(key, { answer, fetchedAt: this.clock() });
    for (const oldest of this.entries.keys()) {
      if (this.entries.size <= this.maxEntries) break;
      this.entries.delete(oldest);
    }
  }

  clear(): void {
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }

  private entry(key: string, limitMs: number, inclusive: boolean): Cached<T> | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    const age = this.clock() - entry.fetchedAt;
    if (age > Math.max(this.ttlMs, this.maxStaleMs)) {
      this.entries.delete(key); // of no use any more
      return undefined;
    }
    if (age < limitMs || (inclusive && age <= limitMs)) {
      this.entries.delete(key); // to the back: most recently used
      this.entries.set(key, entry);
      return entry;
    }
    return undefined;
  }
}

/** Runs one call per key at a time; callers asking meanwhile share its outcome (its
 * answer, or the same error). */
export class SingleFlight<T> {
  private readonly flights = new Map<string, Promise<T>>();

  run(key: string, call: () => Promise<T>): Promise<T> {
    const flight = this.flights.get(key);
    if (flight !== undefined) return flight;
    // The flight leaves the table before its waiters resume, so a retry starts afresh.
    const started = call().finally(() => this.flights.delete(key));
    this.flights.set(key, started);
    return started;
  }
}
