// Type-checked by `npm test`, never run: what a TypeScript service requiring the package
// as CommonJS sees (dist/cjs/index.d.ts, through package.json "exports").
import vanta = require("@vanta-vault/client");

const vault = new vanta.VaultClient();
export const pending: Promise<vanta.GetSecretValueOutput> = vault.getSecretValue({
  SecretId: "prod/X",
});
export const isForbidden = (error: unknown): boolean => error instanceof vanta.Forbidden;
