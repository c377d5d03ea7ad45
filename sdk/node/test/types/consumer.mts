// Type-checked by `npm test`, never run: what a TypeScript service importing the package
// as an ES module sees (dist/index.d.ts, through package.json "exports").
import {
  GetSecretValueCommand,
  RateLimited,
  VaultClient,
  type GetSecretValueOutput,
  type Secret,
  type Value,
  type Version,
} from "@vanta-vault/client";

const vault = new VaultClient({ cacheTtlMs: 1000, caBundle: "/etc/vanta/ca.pem" });
const secret: Secret = await vault.get("prod", "DATABASE_URL", { version: "abc1234" });
export const committed: Date | null = secret.committedAt;
export const values: Record<string, Value> = await vault.getMany("prod", { pattern: "DB_*" });
export const names: string[] = await vault.list("prod", { pattern: "*" });
export const versions: Version[] = await vault.history("prod", "DATABASE_URL");
const answer: GetSecretValueOutput = await vault.send(
  new GetSecretValueCommand({ SecretId: "prod/X" }),
);
export const created: Date | undefined = answer.CreatedDate;
export function wait(error: unknown): number | null {
  return error instanceof RateLimited ? error.retryAfter : null;
}
// @ts-expect-error exactly one of keys and pattern
await vault.getMany("prod", { keys: ["A"], pattern: "*" });
