/**
 * VaultClient: the Node.js twin of the Python SDK's `cli.client.VaultClient` (SPEC §12,
 * §18). Typed results, one error class per broker error code, a cache, retries, a circuit
 * breaker, and `send(new GetSecretValueCommand(...))` for code written against AWS's
 * SecretsManagerClient.
 */

import { inspect } from "node:util";

import {
  GetSecretValueCommand,
  checkStage,
  groupSecretValue,
  secretValue,
  splitSecretId,
  type GetSecretValueInput,
  type GetSecretValueOutput,
} from "./aws.js";
import { CircuitBreaker, type BreakerState } from "./breaker.js";
import { AnswerCache } from "./cache.js";
import { BadRequest, BrokerError, Forbidden, NotFound, VaultError } from "./errors.js";
import type { Answer, Request } from "./http.js";
import type { Secret, Value, Version } from "./results.js";
import { resolve, safeUrl, type Environment } from "./settings.js";
import { Transport, type Logger } from "./transport.js";

export interface VaultClientOptions {
  /** The broker; default VANTA_BROKER_URL, else http://127.0.0.1:8200. */
  url?: string;
  /** The bearer token; default VANTA_TOKEN. */
  token?: string;
  /** How long each attempt may take. */
  timeoutMs?: number;
  /** How long an answer is served from memory (0: no cache). */
  cacheTtlMs?: number;
  /** How old a cached answer may be when it is served because the broker fails. */
  maxStaleMs?: number;
  /** How many attempts follow the first. */
  retries?: number;
  /** The n-th retry waits a time drawn from 0 to min(backoffMaxMs, backoffMs * 2 ** (n-1)). */
  backoffMs?: number;
  backoffMaxMs?: number;
  /** After this many failed calls in a row (0: never), calls fail fast ... */
  breakerThreshold?: number;
  /** ... for this long; then one trial call decides. */
  breakerCooldownMs?: number;
  /** PEM paths; default VANTA_CA_BUNDLE, VANTA_CLIENT_CERT, VANTA_CLIENT_KEY. */
  caBundle?: string;
  clientCert?: string;
  clientKey?: string;
  /** Where the defaults above are read; default process.env. */
  env?: Environment;
  /** Where warnings (a stale answer served) go; default console.warn. Pass `console`, or
   * any object with `warn` and `debug`, to see each retry too. */
  logger?: Logger;
}

type Knob =
  | "timeoutMs"
  | "cacheTtlMs"
  | "maxStaleMs"
  | "retries"
  | "backoffMs"
  | "backoffMaxMs"
  | "breakerThreshold"
  | "breakerCooldownMs";

export const DEFAULTS: Readonly<Record<Knob, number>> = {
  timeoutMs: 5_000,
  cacheTtlMs: 60_000,
  maxStaleMs: 300_000,
  retries: 3,
  backoffMs: 200,
  backoffMaxMs: 5_000,
  breakerThreshold: 5,
  breakerCooldownMs: 30_000,
};

export type GetManyOptions =
  { pattern: string; keys?: never } | { keys: string[]; pattern?: never };

/** Talks to one broker with one token. Every method rejects with a VaultError on failure. */
export class VaultClient {
  readonly url: string;
  readonly #transport: Transport;
  readonly #cache: AnswerCache<Answer>;
  readonly #breaker: CircuitBreaker;
  readonly #groups = new Set<string>(); // SecretIds found to be groups of keys

  constructor(options: VaultClientOptions = {}) {
    const knobs = { ...DEFAULTS, ...definedOnly(options) };
    for (const [name, value] of Object.entries(knobs)) {
      if (typeof value !== "number" || !(value >= 0)) {
        throw new RangeError(`${name} must be a number, 0 or more`);
      }
    }
    const { settings, token } = resolve(options);
    this.url = settings.url;
    this.#cache = new AnswerCache(knobs.cacheTtlMs, knobs.maxStaleMs);
    this.#breaker = new CircuitBreaker(knobs.breakerThreshold, knobs.breakerCooldownMs);
    this.#transport = new Transport(settings, token, {
      timeoutMs: knobs.timeoutMs,
      retry: knobs,
      cache: this.#cache,
      breaker: this.#breaker,
      logger: options.logger ?? { warn: (message) => console.warn(message) },
    });
  }

  /** The circuit breaker: "closed", "open" (calls fail fast) or "half-open" (the
   * cooldown is over; one trial call decides). For health checks and dashboards. */
  get breakerState(): BreakerState {
    return this.#breaker.state;
  }

  /** Forget every cached answer (the next reads ask the broker). */
  clearCache(): void {
    this.#cache.clear();
  }

  /** Close the pooled connections. */
  close(): void {
    this.#transport.close();
  }

  /** One value; `version` is a commit SHA. A request uses one of a limited token's uses;
   * a cache hit does not. */
  async get(environment: string, key: string, options: { version?: string } = {}): Promise<Secret> {
    const query =
      options.version === undefined ? "" : `?version=${encodeURIComponent(options.version)}`;
    const body = await this.#read({ method: "GET", path: vaultPath(environment, key) + query });
    return {
      environment: body.environment,
      key: body.key,
      value: body.value,
      version: body.version ?? null,
      committedAt: time(body.committed_at),
    };
  }

  /** `{key: value}` for `keys`, or for every key matching `pattern`, in one request (one
   * use; a pattern needs secrets:list too). */
  async getMany(environment: string, options: GetManyOptions): Promise<Record<string, Value>> {
    return (await this.#batch(environment, options)).values;
  }

  /** Key names (never values) inside the token's pattern that match `pattern`. */
  async list(environment: string, options: { pattern?: string } = {}): Promise<string[]> {
    const pattern = encodeURIComponent(options.pattern ?? "*");
    const body = await this.#read({
      method: "GET",
      path: `${vaultPath(environment)}?pattern=${pattern}`,
    });
    return body.keys;
  }

  /** The commits that changed `key`, newest first. */
  async history(environment: string, key: string): Promise<Version[]> {
    const path = `/api/v1/history/${segment(environment)}/${keyPath(key)}`;
    const body = await this.#read({ method: "GET", path });
    return body.versions.map((v: Record<string, unknown>) => ({
      version: v["version"],
      committedAt: time(v["committed_at"]),
      author: v["author"] ?? "",
      message: v["message"] ?? "",
      change: v["change"],
    }));
  }

  /**
   * `get` in AWS Secrets Manager's GetSecretValue shape; SecretId is `ENV/KEY`:
   * {Name, VersionId, SecretString, VersionStages, CreatedDate}. A KEY that is a group of
   * keys (`db` holding `db/user`, `db/password`, as `vanta-cli import aws` stores a JSON
   * secret) comes back as that JSON object: one batch read, which needs secrets:list too.
   */
  async getSecretValue(input: GetSecretValueInput): Promise<GetSecretValueOutput> {
    const [environment, key] = splitSecretId(input.SecretId);
    checkStage(input.VersionStage);
    const version = input.VersionId ?? undefined;
    const group = `${environment}/${key}`;
    if (version === undefined && this.#groups.has(group)) {
      return this.#groupValue(environment, key);
    }
    let secret: Secret;
    try {
      secret = await this.get(environment, key, version === undefined ? {} : { version });
    } catch (error) {
      if (!(error instanceof NotFound) || version !== undefined) throw error;
      try {
        return await this.#groupValue(environment, key);
      } catch (other) {
        if (other instanceof NotFound || other instanceof Forbidden) throw error;
        throw other;
      }
    }
    return secretValue(secret, version !== undefined);
  }

  /** SecretsManagerClient's `send` for GetSecretValueCommand (ours or AWS's own). */
  async send(command: GetSecretValueCommand): Promise<GetSecretValueOutput> {
    const name = (command as { constructor?: { name?: string } } | null)?.constructor?.name;
    if (!(command instanceof GetSecretValueCommand) && name !== "GetSecretValueCommand") {
      throw new VaultError(
        `VaultClient.send takes a GetSecretValueCommand, not ${name ?? typeof command}`,
      );
    }
    return this.getSecretValue(command.input);
  }

  [inspect.custom](): string {
    return `VaultClient { url: '${safeUrl(this.url)}' }`;
  }

  async #groupValue(environment: string, key: string): Promise<GetSecretValueOutput> {
    const batch = await this.#batch(environment, { pattern: `${key}/*` });
    if (Object.keys(batch.values).length === 0) {
      throw new NotFound(404, "not_found", `key '${key}' not found`, null);
    }
    this.#groups.add(`${environment}/${key}`);
    return groupSecretValue(environment, key, batch.values, batch.version);
  }

  async #batch(
    environment: string,
    options: GetManyOptions,
  ): Promise<{ values: Record<string, Value>; version: string | null }> {
    const { keys, pattern } = options as { keys?: unknown; pattern?: unknown };
    if ((keys === undefined) === (pattern === undefined)) {
      throw new TypeError("pass exactly one of keys and pattern");
    }
    const json = keys !== undefined ? { keys: [...(keys as string[])] } : { pattern };
    const body = await this.#read({
      method: "POST",
      path: `${vaultPath(environment)}/batch`,
      json,
    });
    return { values: body.values, version: body.version ?? null };
  }

  /** A read through the cache; its JSON body (`any`: the broker's documented answers),
   * parsed afresh for each caller so that no caller can change what another one gets. */
  async #read(request: Request): Promise<any> {
    const answer = await this.#transport.send(request, true);
    try {
      return JSON.parse(answer.body);
    } catch {
      const requestId = answer.header("x-request-id") || null;
      const message = "the answer is not JSON: is this URL a Vanta broker?";
      throw new BrokerError(answer.status, "invalid_response", message, requestId);
    }
  }
}

function definedOnly(options: VaultClientOptions): Partial<Record<Knob, number>> {
  const knobs: Partial<Record<Knob, number>> = {};
  for (const name of Object.keys(DEFAULTS) as Knob[]) {
    if (options[name] !== undefined) knobs[name] = options[name];
  }
  return knobs;
}

function time(raw: unknown): Date | null {
  return typeof raw === "string" ? new Date(raw) : null;
}

/** One URL path segment. "." and ".." are refused before sending: URL resolution on the
 * way would silently turn them into another path. */
function segment(text: string): string {
  if (text === "." || text === "..") {
    throw new BadRequest(400, "bad_request", `a name cannot be '${text}'`, null);
  }
  return encodeURIComponent(text);
}

function keyPath(key: string): string {
  return key.split("/").map(segment).join("/");
}

function vaultPath(environment: string, key?: string): string {
  const path = `/api/v1/vault/${segment(environment)}`;
  return key === undefined ? path : `${path}/${keyPath(key)}`;
}
