/**
 * @vanta-vault/client: the Node.js client of the Vanta Vault secrets broker (SPEC §18).
 *
 *     import { VaultClient, GetSecretValueCommand } from "@vanta-vault/client";
 *     const vc = new VaultClient();              // VANTA_BROKER_URL, VANTA_TOKEN
 *     (await vc.get("prod", "DATABASE_URL")).value;
 *     await vc.send(new GetSecretValueCommand({ SecretId: "prod/DATABASE_URL" }));
 */

export { VaultClient, DEFAULTS, type VaultClientOptions, type GetManyOptions } from "./client.js";
export {
  GetSecretValueCommand,
  type GetSecretValueInput,
  type GetSecretValueOutput,
} from "./aws.js";
export type { Secret, Value, Version } from "./results.js";
export type { Logger } from "./transport.js";
export type { BreakerState } from "./breaker.js";
export { DEFAULT_BROKER_URL } from "./settings.js";
export {
  VaultError,
  BrokerUnavailable,
  BrokerError,
  BadRequest,
  TokenInvalid,
  Forbidden,
  ScopeDenied,
  PermissionDenied,
  UsageExhausted,
  TokenRevoked,
  NotFound,
  RateLimited,
  ServiceUnavailable,
  DecryptFailed,
  AuditUnavailable,
  StateUnavailable,
} from "./errors.js";
