/**
 * Where a VaultClient finds its broker, token and TLS settings: the options given, else
 * the environment (SPEC §3, §17). The only place the environment is read.
 *
 * TLS: `caBundle` (else VANTA_CA_BUNDLE; without either, Node's own trusted roots);
 * `clientCert` (else VANTA_CLIENT_CERT) is a PEM path holding the certificate, or the
 * certificate and its key; `clientKey` (else VANTA_CLIENT_KEY, read only beside a
 * certificate that came from the environment too) names the key file when the
 * certificate file does not hold it.
 */

import { VaultError } from "./errors.js";

export const DEFAULT_BROKER_URL = "http://127.0.0.1:8200";

export type Environment = Readonly<Record<string, string | undefined>>;

export interface Settings {
  readonly url: string; // without a trailing slash
  readonly caBundle: string | undefined;
  readonly clientCert: string | undefined;
  readonly clientKey: string | undefined;
}

export interface SettingsOptions {
  url?: string | undefined;
  token?: string | undefined;
  caBundle?: string | undefined;
  clientCert?: string | undefined;
  clientKey?: string | undefined;
  env?: Environment | undefined;
}

/** The settings, and the token apart (it never goes into an object that may be logged).
 * Throws VaultError for a bad URL, or a key without a certificate. */
export function resolve(options: SettingsOptions): { settings: Settings; token: string | null } {
  const env = options.env ?? process.env;
  const url = (options.url || env["VANTA_BROKER_URL"] || DEFAULT_BROKER_URL).replace(/\/+$/, "");
  let parsed: URL | undefined;
  try {
    parsed = new URL(url);
  } catch {
    parsed = undefined;
  }
  if (parsed === undefined || !["http:", "https:"].includes(parsed.protocol)) {
    throw new VaultError(`invalid broker URL '${safeUrl(url)}'`);
  }
  // "$(cat file)" may keep a stray newline
  const token = (options.token ?? env["VANTA_TOKEN"] ?? "").trim() || null;
  let { clientCert, clientKey } = options;
  if (clientCert === undefined) {
    clientCert = env["VANTA_CLIENT_CERT"] || undefined;
    clientKey = clientKey || env["VANTA_CLIENT_KEY"] || undefined;
  }
  if (clientKey && !clientCert) {
    throw new VaultError("a client key (VANTA_CLIENT_KEY) needs a certificate (VANTA_CLIENT_CERT)");
  }
  const caBundle = options.caBundle || env["VANTA_CA_BUNDLE"] || undefined;
  return { settings: { url, caBundle, clientCert, clientKey: clientKey || undefined }, token };
}

/** The URL without user:password@ (it may carry credentials). */
export function safeUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#]*@/i, "$1");
}
