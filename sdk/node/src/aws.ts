/**
 * AWS Secrets Manager's GetSecretValue, so code written against `SecretsManagerClient`
 * of `@aws-sdk/client-secrets-manager` moves over with only the client swapped (SPEC §12,
 * §18).
 *
 * A SecretId is `ENVIRONMENT/KEY` (`prod/DATABASE_URL`, `dev/API_KEYS/openai`); VersionId
 * is a commit SHA; the only VersionStage is AWSCURRENT. A KEY naming a group of keys (a
 * JSON secret that `vanta-cli import aws` split into `db/user`, `db/password`) reads back
 * as the JSON object it was.
 */

import { BadRequest } from "./errors.js";
import type { Secret, Value } from "./results.js";

export const CURRENT_STAGE = "AWSCURRENT";

export interface GetSecretValueInput {
  SecretId: string;
  VersionId?: string | undefined;
  VersionStage?: string | undefined;
}

/** GetSecretValue's answer. VersionId and CreatedDate are undefined outside Git, and
 * CreatedDate for a group of keys (a batch answer names its commit, not its time). */
export interface GetSecretValueOutput {
  Name: string;
  VersionId: string | undefined;
  SecretString: string;
  VersionStages: string[];
  CreatedDate: Date | undefined;
}

/** The command `VaultClient.send` takes, as `SecretsManagerClient.send` takes AWS's. */
export class GetSecretValueCommand {
  constructor(readonly input: GetSecretValueInput) {}
}

/** [environment, key] of `ENVIRONMENT/KEY`; BadRequest, before any request, otherwise. */
export function splitSecretId(secretId: unknown): [string, string] {
  const text = String(secretId);
  const slash = text.indexOf("/");
  const environment = text.slice(0, slash);
  const key = text.slice(slash + 1);
  if (slash < 0 || !environment || !key) {
    throw new BadRequest(400, "bad_request", "a SecretId is 'ENVIRONMENT/KEY'", null);
  }
  return [environment, key];
}

export function checkStage(versionStage: string | undefined): void {
  if (versionStage !== undefined && versionStage !== CURRENT_STAGE) {
    const message = `the only VersionStage is ${CURRENT_STAGE} (or a VersionId)`;
    throw new BadRequest(400, "bad_request", message, null);
  }
}

/** GetSecretValue's answer for `secret`; VersionStages is ["AWSCURRENT"] unless a
 * VersionId was asked for. */
export function secretValue(secret: Secret, versionAsked: boolean): GetSecretValueOutput {
  return {
    Name: `${secret.environment}/${secret.key}`,
    VersionId: secret.version ?? undefined,
    SecretString: yamlScalar(secret.value),
    VersionStages: versionAsked ? [] : [CURRENT_STAGE],
    CreatedDate: secret.committedAt ?? undefined,
  };
}

/** GetSecretValue's answer for a group of keys: its leaves as one JSON object (numbers
 * and booleans keeping their type), the way AWS held the secret before the import. */
export function groupSecretValue(
  environment: string,
  key: string,
  values: Record<string, Value>,
  version: string | null,
): GetSecretValueOutput {
  const below: [string, Value][] = Object.entries(values).map(([name, value]) => [
    name.slice(key.length + 1),
    value,
  ]);
  return {
    Name: `${environment}/${key}`,
    VersionId: version ?? undefined,
    SecretString: JSON.stringify(nested(below)),
    VersionStages: [CURRENT_STAGE],
    CreatedDate: undefined,
  };
}

/** A value as YAML writes it (and as run-with-secrets injects it): "42", "true". */
export function yamlScalar(value: Value): string {
  if (typeof value === "number" && !Number.isFinite(value)) {
    return Number.isNaN(value) ? ".nan" : value > 0 ? ".inf" : "-.inf";
  }
  return String(value);
}

type Tree = { [segment: string]: Value | Tree };

/** A document from '/'-joined keys. Prototype-free objects: a segment may be any name,
 * `__proto__` included. */
function nested(flat: [string, Value][]): Tree {
  const document: Tree = Object.create(null);
  for (const [key, value] of flat) {
    const segments = key.split("/");
    const leaf = segments.pop() as string;
    let node = document;
    for (const segment of segments) {
      const child = node[segment];
      node = typeof child === "object" ? child : (node[segment] = Object.create(null) as Tree);
    }
    node[leaf] = value;
  }
  return document;
}
