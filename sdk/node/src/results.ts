/** The typed results a VaultClient returns. */

/** A secret's value keeps its YAML type: "text", 42, 1.5, true. */
export type Value = string | number | boolean;

export interface Secret {
  environment: string;
  key: string;
  value: Value;
  version: string | null; // the commit the value came from; null outside Git
  committedAt: Date | null; // that commit's time
}

export interface Version {
  version: string;
  committedAt: Date | null;
  author: string;
  message: string;
  change: "added" | "changed" | "removed";
}
