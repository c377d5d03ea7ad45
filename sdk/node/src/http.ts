/**
 * One HTTP attempt to the broker over `node:http` / `node:https`.
 *
 * Not the global `fetch`: Node's fetch (undici) takes a CA bundle or a client certificate
 * only through a dispatcher from the `undici` package, a runtime dependency this package
 * does not have. `node:https` takes `ca`, `cert` and `key` per request, and it tells
 * how far a request got before it failed (refused, handshake, sent), which is what decides
 * whether a POST may be sent again (see retry.ts). One transport for plain HTTP and TLS,
 * so the same code is tested by every test.
 */

import * as http from "node:http";
import * as https from "node:https";
import { readFile } from "node:fs/promises";

import { VaultError } from "./errors.js";
import type { Settings } from "./settings.js";

export const POOL_SIZE = 32; // sockets kept per host: enough for a busy service

/** An answer: any status. Header names are lower-case. */
export class Answer {
  constructor(
    readonly status: number,
    private readonly headers: http.IncomingHttpHeaders,
    readonly body: string,
  ) {}

  header(name: string): string {
    const value = this.headers[name.toLowerCase()];
    return (Array.isArray(value) ? value[0] : value) ?? "";
  }
}

/**
 * How far a request got when it failed. `connecting`: no connection yet (refused, no
 * route, name not found, or the timeout struck first): the broker never saw it.
 * `handshake`: TCP is up, TLS is not. `sent`: the request may have reached the broker.
 */
export type Stage = "connecting" | "handshake" | "sent";

/** No answer came: the request failed on the way. Internal; the client turns it into a
 * BrokerUnavailable. */
export class TransportFailure extends Error {
  constructor(
    readonly reason: string,
    readonly stage: Stage,
    readonly timedOut: boolean,
    readonly tls: boolean,
  ) {
    super(reason);
  }

  /** Provably never carried out: no connection (refused, not opened in time) or no
   * finished handshake, so not one byte of the request left. */
  get neverSent(): boolean {
    return this.stage !== "sent";
  }
}

export interface Request {
  method: "GET" | "POST";
  path: string; // with its query string
  json?: unknown;
}

/** Sends requests to one broker; keeps a pool of keep-alive connections. */
export class HttpTransport {
  private readonly base: URL;
  private readonly agent: http.Agent;

  constructor(
    private readonly settings: Settings,
    private readonly authorization: string | null,
  ) {
    this.base = new URL(settings.url);
    const secure = this.base.protocol === "https:";
    const options = { keepAlive: true, maxSockets: POOL_SIZE };
    this.agent = secure ? new https.Agent(options) : new http.Agent(options);
  }

  /** Closes the pooled connections (idle ones never keep the process alive anyway). */
  close(): void {
    this.agent.destroy();
  }

  /** One attempt, bounded by `timeoutMs`: an Answer, or a TransportFailure. A VaultError
   * when the TLS files cannot be read. */
  async attempt(request: Request, timeoutMs: number): Promise<Answer> {
    const secure = this.base.protocol === "https:";
    const body = request.json === undefined ? undefined : JSON.stringify(request.json);
    const headers: http.OutgoingHttpHeaders = { Accept: "application/json" };
    if (this.authorization !== null) headers["Authorization"] = this.authorization;
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      headers["Content-Length"] = Buffer.byteLength(body);
    }
    const options: https.RequestOptions = {
      method: request.method,
      protocol: this.base.protocol,
      hostname: this.base.hostname.replace(/^\[(.*)\]$/, "$1"), // [::1] -> ::1
      port: this.base.port || (secure ? 443 : 80),
      path: this.base.pathname.replace(/\/$/, "") + request.path,
      headers,
      // A POST goes on a connection of its own: on a pooled one that the broker closed
      // meanwhile, a reset could not tell "never read" from "carried out, answer lost".
      agent: request.method === "GET" ? this.agent : false,
      ...(secure ? await this.tlsOptions() : {}),
    };
    return new Promise<Answer>((resolve, reject) => {
      let stage: Stage = "connecting";
      let timedOut = false;
      const module = secure ? https : http;
      const req = module.request(options, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("end", () => {
          clearTimeout(timer);
          resolve(new Answer(res.statusCode ?? 0, res.headers, Buffer.concat(chunks).toString()));
        });
        res.on("error", fail);
        res.on("aborted", () => fail(Object.assign(new Error("cut off"), { code: "ECONNRESET" })));
      });
      const timer = setTimeout(() => {
        timedOut = true;
        req.destroy(new Error("timed out"));
      }, timeoutMs);
      req.on("socket", (socket) => {
        if (req.reusedSocket || !socket.connecting) {
          stage = "sent";
          return;
        }
        socket.once("connect", () => {
          if (stage === "connecting") stage = secure ? "handshake" : "sent";
        });
        socket.once("secureConnect", () => {
          stage = "sent";
        });
      });
      req.on("error", fail);
      req.end(body);

      function fail(error: Error): void {
        clearTimeout(timer);
        const code = (error as NodeJS.ErrnoException).code ?? "";
        const tls =
          !timedOut && (stage === "handshake" || /^(ERR_SSL_|ERR_TLS_|EPROTO$)/.test(code));
        const reason = timedOut ? "timed out" : describe(code, tls);
        reject(new TransportFailure(reason, stage, timedOut, tls));
      }
    });
  }

  /** Read on every attempt, so certificates renewed on disk are picked up. */
  private async tlsOptions(): Promise<https.RequestOptions> {
    const { caBundle, clientCert, clientKey } = this.settings;
    try {
      const options: https.RequestOptions = {};
      if (caBundle) options.ca = await readFile(caBundle);
      if (clientCert) {
        options.cert = await readFile(clientCert);
        // One PEM may hold both; OpenSSL takes the key block out of it.
        options.key = clientKey ? await readFile(clientKey) : options.cert;
      }
      return options;
    } catch (error) {
      throw new VaultError(`TLS settings: ${(error as Error).message}`);
    }
  }
}

const REASONS: Record<string, string> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset",
  EPIPE: "connection reset",
  ENOTFOUND: "name not found",
  EAI_AGAIN: "name lookup failed",
  EHOSTUNREACH: "no route to host",
  ENETUNREACH: "network is unreachable",
};

/** A short reason that names no header, token or value. */
function describe(code: string, tls: boolean): string {
  if (tls) {
    return code ? `TLS handshake failed (${code})` : "TLS handshake failed";
  }
  return REASONS[code] ?? (code || "the connection failed");
}
