// Reading secrets through a real broker (SPEC §18): values with their commit, versions,
// batches by pattern and by keys, lists, history, AWS's GetSecretValue shape, settings
// from the environment, and the CommonJS build.

import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { after, before, test } from "node:test";

import {
  BadRequest,
  GetSecretValueCommand,
  NotFound,
  UsageExhausted,
  VaultClient,
} from "@vanta-vault/client";

import { git, makeRepo, mint, startBroker } from "./support.mjs";

let repo;
let broker;

before(async () => {
  repo = await makeRepo();
  broker = await startBroker(repo);
});

after(async () => {
  await broker?.stop();
});

function client(token, options = {}) {
  return new VaultClient({ url: broker.url, token, env: {}, ...options });
}

async function commitTime(sha) {
  return new Date(await git(repo.repo, "log", "-1", "--format=%cI", sha));
}

function requestsSince(before) {
  return broker.audit().slice(before);
}

test("get returns the value with its type, its commit and the commit's time", async () => {
  const vc = client(await mint({ environment: "dev" }));
  const [head] = repo.commits.slice(-1);
  const secret = await vc.get("dev", "DATABASE_URL");
  assert.deepEqual(secret, {
    environment: "dev",
    key: "DATABASE_URL",
    value: repo.dev.DATABASE_URL,
    version: head,
    committedAt: await commitTime(head),
  });
  assert.equal((await vc.get("dev", "PORT")).value, repo.dev.PORT); // a number stays one
  assert.equal((await vc.get("dev", "DEBUG")).value, true);
  assert.equal((await vc.get("dev", "API_KEYS/openai")).value, repo.dev.API_KEYS.openai);
});

test("get with a version reads the value as of that commit, full or abbreviated", async () => {
  const vc = client(await mint({ environment: "dev" }));
  const [first] = repo.commits;
  const old = await vc.get("dev", "PORT", { version: first });
  assert.equal(old.value, repo.firstDev.PORT);
  assert.equal(old.version, first);
  assert.deepEqual(old.committedAt, await commitTime(first));
  assert.equal(
    (await vc.get("dev", "PORT", { version: first.slice(0, 7) })).value,
    repo.firstDev.PORT,
  );
  assert.equal((await vc.get("dev", "PORT")).value, repo.dev.PORT);
  await assert.rejects(vc.get("dev", "PORT", { version: "0".repeat(40) }), NotFound);
});

test("getMany by pattern and by keys: one request and one use each", async () => {
  const vc = client(await mint({ environment: "dev", usageLimit: 2 }));
  const start = broker.audit().length;
  assert.deepEqual(await vc.getMany("dev", { pattern: "DATABASE_*" }), {
    DATABASE_URL: repo.dev.DATABASE_URL,
    DATABASE_USER: repo.dev.DATABASE_USER,
  });
  assert.deepEqual(await vc.getMany("dev", { keys: ["PORT", "API_KEYS/stripe"] }), {
    PORT: repo.dev.PORT,
    "API_KEYS/stripe": repo.dev.API_KEYS.stripe,
  });
  const batches = requestsSince(start);
  assert.deepEqual(
    batches.map((r) => [r.event, r.status]),
    [
      ["secret.batch", 200],
      ["secret.batch", 200],
    ],
  );
  await assert.rejects(vc.getMany("dev", { pattern: "NOTHING_*" }), UsageExhausted); // both uses gone
});

test("getMany takes exactly one of keys and pattern, and a missing key fails the batch", async () => {
  const vc = client(await mint({ environment: "dev" }));
  const start = broker.audit().length;
  await assert.rejects(vc.getMany("dev", {}), TypeError);
  await assert.rejects(vc.getMany("dev", { keys: ["PORT"], pattern: "*" }), TypeError);
  assert.equal(broker.audit().length, start); // refused before any request
  await assert.rejects(vc.getMany("dev", { keys: ["PORT", "MISSING"] }), NotFound);
  assert.deepEqual(await vc.getMany("dev", { pattern: "NOTHING_*" }), {});
});

test("list gives the names inside the token's pattern that match", async () => {
  const vc = client(await mint({ environment: "dev", keyPattern: "DATABASE_*" }));
  assert.deepEqual((await vc.list("dev")).sort(), ["DATABASE_URL", "DATABASE_USER"]);
  assert.deepEqual(await vc.list("dev", { pattern: "*USER" }), ["DATABASE_USER"]);
  const all = client(await mint({ environment: "dev" }));
  assert.deepEqual(
    (await all.list("dev", { pattern: "API_KEYS/*" })).sort(),
    Object.keys(repo.dev.API_KEYS)
      .map((k) => `API_KEYS/${k}`)
      .sort(),
  );
});

test("history gives the commits that changed a key, newest first", async () => {
  const vc = client(await mint({ environment: "dev" }));
  const [first, second] = repo.commits;
  const versions = await vc.history("dev", "PORT");
  assert.deepEqual(versions, [
    {
      version: second,
      committedAt: await commitTime(second),
      author: "Ada Tester",
      message: await git(repo.repo, "log", "-1", "--format=%s", second),
      change: "changed",
    },
    {
      version: first,
      committedAt: await commitTime(first),
      author: "Ada Tester",
      message: await git(repo.repo, "log", "-1", "--format=%s", first),
      change: "added",
    },
  ]);
});

test("getSecretValue answers in AWS Secrets Manager's shape", async () => {
  const vc = client(await mint({ environment: "dev" }));
  const [first, head] = repo.commits;
  const answer = await vc.getSecretValue({ SecretId: "dev/DATABASE_URL" });
  assert.deepEqual(answer, {
    Name: "dev/DATABASE_URL",
    VersionId: head,
    SecretString: repo.dev.DATABASE_URL,
    VersionStages: ["AWSCURRENT"],
    CreatedDate: await commitTime(head),
  });
  assert.ok(answer.CreatedDate instanceof Date);
  const old = await vc.getSecretValue({ SecretId: "dev/PORT", VersionId: first });
  assert.deepEqual(
    [old.SecretString, old.VersionId, old.VersionStages],
    [String(repo.firstDev.PORT), first, []],
  );
  assert.deepEqual(old.CreatedDate, await commitTime(first));
  assert.equal((await vc.getSecretValue({ SecretId: "dev/DEBUG" })).SecretString, "true");
  const nested = await vc.getSecretValue({
    SecretId: "dev/API_KEYS/openai",
    VersionStage: "AWSCURRENT",
  });
  assert.equal(nested.SecretString, repo.dev.API_KEYS.openai);
});

test("send(new GetSecretValueCommand(...)) gives getSecretValue's answer", async () => {
  const vc = client(await mint({ environment: "dev" }));
  const input = { SecretId: "dev/PORT", VersionId: repo.commits[0] };
  assert.deepEqual(await vc.send(new GetSecretValueCommand(input)), await vc.getSecretValue(input));
  assert.deepEqual(
    await vc.send(new GetSecretValueCommand({ SecretId: "dev/DATABASE_USER" })),
    await vc.getSecretValue({ SecretId: "dev/DATABASE_USER" }),
  );
});

test("a group of keys reads back as the JSON object it was imported from", async () => {
  const vc = client(await mint({ environment: "dev" }));
  const group = await vc.getSecretValue({ SecretId: "dev/API_KEYS" });
  assert.deepEqual(JSON.parse(group.SecretString), repo.dev.API_KEYS);
  assert.deepEqual([group.VersionId, group.CreatedDate], [repo.commits.at(-1), undefined]);
  const start = broker.audit().length;
  assert.deepEqual(await vc.getSecretValue({ SecretId: "dev/API_KEYS" }), group); // remembered, cached
  assert.equal(broker.audit().length, start);
  const readOnly = client(await mint({ environment: "dev", permissions: ["secrets:read"] }));
  await assert.rejects(readOnly.getSecretValue({ SecretId: "dev/API_KEYS" }), NotFound);
  await assert.rejects(vc.getSecretValue({ SecretId: "dev/NOTHING_HERE" }), NotFound);
});

test("a SecretId that is not ENV/KEY, or another stage, is refused before any request", async () => {
  const vc = client(await mint());
  const start = broker.audit().length;
  for (const input of [
    { SecretId: "DATABASE_URL" },
    { SecretId: "dev/" },
    { SecretId: "/PORT" },
    { SecretId: "dev/PORT", VersionStage: "AWSPREVIOUS" },
  ]) {
    await assert.rejects(vc.getSecretValue(input), (error) => {
      assert.ok(error instanceof BadRequest, `${JSON.stringify(input)}: ${error}`);
      assert.deepEqual([error.status, error.code, error.requestId], [400, "bad_request", null]);
      return true;
    });
  }
  await assert.rejects(vc.get(".", "PORT"), BadRequest);
  await assert.rejects(vc.get("dev", "API_KEYS/.."), BadRequest);
  assert.equal(broker.audit().length, start);
});

test("the broker and token come from VANTA_BROKER_URL and VANTA_TOKEN unless given", async () => {
  const token = await mint({ environment: "prod" });
  const fromEnv = new VaultClient({
    env: { VANTA_BROKER_URL: broker.url, VANTA_TOKEN: `${token}\n` },
  });
  assert.equal((await fromEnv.get("prod", "API_KEY")).value, repo.prod.API_KEY);
  const given = new VaultClient({
    url: broker.url,
    token,
    env: { VANTA_BROKER_URL: "http://127.0.0.1:9", VANTA_TOKEN: "not-this-one" },
  });
  assert.equal((await given.get("prod", "API_KEY")).value, repo.prod.API_KEY);
  assert.equal(new VaultClient({ env: {} }).url, "http://127.0.0.1:8200");
});

test("the CommonJS build exports the same client and errors by name", async () => {
  const require = createRequire(import.meta.url);
  const cjs = require("@vanta-vault/client");
  const vc = new cjs.VaultClient({
    url: broker.url,
    token: await mint({ environment: "prod" }),
    env: {},
  });
  assert.equal((await vc.get("prod", "DATABASE_URL")).value, repo.prod.DATABASE_URL);
  await assert.rejects(vc.get("prod", "MISSING"), cjs.NotFound);
  const answer = await vc.send(new cjs.GetSecretValueCommand({ SecretId: "prod/API_KEY" }));
  assert.equal(answer.SecretString, repo.prod.API_KEY);
  const pkg = require("@vanta-vault/client/package.json");
  assert.ok(existsSync(new URL(`../${pkg.types}`, import.meta.url)), "dist/index.d.ts");
  assert.equal(pkg.dependencies, undefined, "no runtime dependencies");
});
