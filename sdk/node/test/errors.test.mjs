// Every error class from a real broker's answer (SPEC §12's tree, §18), each carrying
// status, code, message and requestId; and a token never in an error or the client's
// own printout.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import { dirname } from "node:path";
import { after, before, test } from "node:test";
import { inspect } from "node:util";

import * as sdk from "@vanta-vault/client";

import {
  freePort,
  makeRepo,
  mint,
  poll,
  rawRequest,
  scriptedServer,
  startBroker,
  tempDir,
} from "./support.mjs";

const { VaultClient } = sdk;

let repo;
let broker;
const stops = [];

before(async () => {
  repo = await makeRepo();
  broker = await startBroker(repo);
  stops.push(() => broker.stop());
});

after(async () => {
  for (const stop of stops.reverse()) await stop();
});

function client(url, token, options = {}) {
  return new VaultClient({ url, token, env: {}, retries: 0, cacheTtlMs: 0, ...options });
}

/** The error `call` rejects with, checked against the audit record of its request. */
async function failure(call, audit = () => broker.audit()) {
  const error = await call().then(
    () => assert.fail("no error"),
    (e) => e,
  );
  if (error instanceof sdk.BrokerError) {
    const record = audit().find((r) => r.request_id === error.requestId);
    assert.ok(record, `an audit record of request ${error.requestId}`);
    assert.deepEqual([record.status, record.error], [error.status, error.code]);
  }
  return error;
}

function assertNoToken(token, ...things) {
  for (const thing of things) {
    for (const text of [
      String(thing),
      thing.message,
      thing.stack,
      inspect(thing),
      JSON.stringify(thing),
    ]) {
      assert.ok(!String(text).includes(token), `the token leaked into ${text}`);
    }
  }
}

const CASES = [
  ["ScopeDenied", "scope_denied", 403, { environment: "dev" }, (vc) => vc.get("prod", "API_KEY")],
  ["ScopeDenied", "scope_denied", 403, { keyPattern: "DATABASE_*" }, (vc) => vc.get("dev", "PORT")],
  [
    "PermissionDenied",
    "permission_denied",
    403,
    { permissions: ["secrets:read"] },
    (vc) => vc.list("dev"),
  ],
  ["NotFound", "not_found", 404, {}, (vc) => vc.get("dev", "MISSING")],
  ["NotFound", "not_found", 404, {}, (vc) => vc.get("staging", "PORT")],
  ["BadRequest", "bad_request", 400, {}, (vc) => vc.get("Bad_Env", "PORT")],
  ["BadRequest", "bad_request", 400, {}, (vc) => vc.get("dev", "PORT", { version: "zz" })],
  ["BadRequest", "method_not_allowed", 405, {}, (vc) => vc.list("tokens")],
  ["DecryptFailed", "decrypt_failed", 503, {}, (vc) => vc.get("broken", "A")],
];

for (const [name, code, status, scope, call] of CASES) {
  test(`${name} (${code}) from a real answer: ${call.toString().slice(8)}`, async () => {
    const token = await mint(scope);
    const error = await failure(() => call(client(broker.url, token)));
    assert.equal(error.constructor, sdk[name]);
    assert.ok(error instanceof sdk.BrokerError && error instanceof sdk.VaultError);
    assert.deepEqual([error.status, error.code, error.name], [status, code, name]);
    assert.ok(error.message.length > 0 && !error.message.includes("\n"), error.message);
    assert.match(error.requestId, /\S/);
    assert.ok(
      String(error).startsWith(`${name}: ${status} ${code}: ${error.message}`),
      String(error),
    );
    assertNoToken(token, error);
  });
}

test("TokenInvalid for a bad token or none, never retried", async () => {
  const start = broker.audit().length;
  for (const token of ["garbage", undefined]) {
    const error = await failure(() => client(broker.url, token).get("dev", "PORT"));
    assert.ok(error instanceof sdk.TokenInvalid, String(error));
    assert.deepEqual([error.status, error.code], [401, "token_invalid"]);
    assertNoToken("garbage", error);
  }
  assert.equal(broker.audit().length - start, 2); // never retried
});

test("UsageExhausted once a limited token is used up, TokenRevoked once revoked", async () => {
  const limited = await mint({ usageLimit: 1 });
  const vc = client(broker.url, limited);
  assert.equal((await vc.get("dev", "PORT")).value, repo.dev.PORT);
  const exhausted = await failure(() => vc.get("dev", "PORT"));
  assert.ok(exhausted instanceof sdk.UsageExhausted && exhausted instanceof sdk.Forbidden);
  assert.deepEqual([exhausted.status, exhausted.code], [403, "usage_exhausted"]);

  const token = await mint();
  const answer = await rawRequest(`${broker.url}/api/v1/vault/tokens/revoke-self`, {
    method: "POST",
    token,
  });
  assert.equal(answer.status, 200, answer.body);
  const revoked = await failure(() => client(broker.url, token).get("dev", "PORT"));
  assert.ok(revoked instanceof sdk.TokenRevoked && revoked instanceof sdk.Forbidden);
  assert.deepEqual([revoked.status, revoked.code], [403, "token_revoked"]);
  assertNoToken(limited, exhausted);
  assertNoToken(token, revoked);
});

test("RateLimited carries the broker's Retry-After", async () => {
  const limited = await startBroker(repo, { env: { VANTA_RATE_LIMIT: "1/minute" } });
  stops.push(() => limited.stop());
  const vc = client(limited.url, await mint());
  await vc.get("dev", "PORT");
  const error = await failure(() => vc.get("dev", "PORT"), limited.audit);
  assert.ok(error instanceof sdk.RateLimited, String(error));
  assert.deepEqual([error.status, error.code], [429, "rate_limited"]);
  assert.ok(error.retryAfter >= 1 && error.retryAfter <= 60, `retryAfter ${error.retryAfter}`);
  assert.equal(limited.audit().length, 2); // not retried
});

test("AuditUnavailable when the broker cannot write its audit record", async () => {
  const own = await startBroker(repo);
  stops.push(() => own.stop());
  const vc = client(own.url, await mint());
  await vc.get("dev", "PORT");
  const directory = dirname(own.auditLog);
  rmSync(directory, { recursive: true });
  writeFileSync(directory, ""); // the audit directory is now a file
  const error = await call(() => vc.get("dev", "PORT"));
  assert.ok(
    error instanceof sdk.AuditUnavailable && error instanceof sdk.ServiceUnavailable,
    String(error),
  );
  assert.deepEqual([error.status, error.code], [503, "audit_unavailable"]);
  assert.match(error.requestId, /\S/);
});

test("StateUnavailable when the shared state store is down", async () => {
  const redis = await startRedis();
  stops.push(() => redis.stop());
  const own = await startBroker(repo, { env: { VANTA_STATE_URL: redis.url } });
  stops.push(() => own.stop());
  const vc = client(own.url, await mint());
  await vc.get("dev", "PORT");
  await redis.stop();
  const error = await failure(() => vc.get("dev", "PORT"), own.audit);
  assert.ok(
    error instanceof sdk.StateUnavailable && error instanceof sdk.ServiceUnavailable,
    String(error),
  );
  assert.deepEqual([error.status, error.code], [503, "state_unavailable"]);
});

test("BrokerUnavailable, in one line, when nothing listens", async () => {
  const url = `http://127.0.0.1:${await freePort()}`;
  const token = await mint();
  const error = await call(() => client(url, token).get("dev", "PORT"));
  assert.ok(error instanceof sdk.BrokerUnavailable && error instanceof sdk.VaultError);
  assert.ok(!(error instanceof sdk.BrokerError));
  assert.equal(error.message, `cannot reach the broker at ${url}: connection refused`);
  assertNoToken(token, error);
});

test("a code the client does not know is mapped by its status", async () => {
  const server = await scriptedServer({
    script: [
      {
        status: 403,
        body: JSON.stringify({ error: { code: "brand_new", message: "m" }, request_id: "r1" }),
      },
      502,
      { status: 200, body: "<html>not a broker</html>" },
    ],
  });
  stops.push(() => server.close());
  const vc = client(server.url, "t0ken-value");
  const forbidden = await call(() => vc.get("dev", "PORT"));
  assert.equal(forbidden.constructor, sdk.Forbidden);
  assert.deepEqual([forbidden.code, forbidden.requestId], ["brand_new", "r1"]);
  const badGateway = await call(() => vc.get("dev", "PORT"));
  assert.equal(badGateway.constructor, sdk.BrokerError);
  assert.deepEqual([badGateway.status, badGateway.code], [502, "http_502"]);
  const notJson = await call(() => vc.get("dev", "PORT"));
  assert.deepEqual([notJson.constructor, notJson.code], [sdk.BrokerError, "invalid_response"]);
});

test("the tree of SPEC §12, every class exported by name", () => {
  const { VaultError, BrokerError, Forbidden, ServiceUnavailable } = sdk;
  assert.ok(sdk.BrokerUnavailable.prototype instanceof VaultError);
  assert.ok(BrokerError.prototype instanceof VaultError && VaultError.prototype instanceof Error);
  for (const name of [
    "BadRequest",
    "TokenInvalid",
    "Forbidden",
    "NotFound",
    "RateLimited",
    "ServiceUnavailable",
  ]) {
    assert.ok(sdk[name].prototype instanceof BrokerError, name);
  }
  for (const name of ["ScopeDenied", "PermissionDenied", "UsageExhausted", "TokenRevoked"]) {
    assert.ok(sdk[name].prototype instanceof Forbidden, name);
  }
  for (const name of ["DecryptFailed", "AuditUnavailable", "StateUnavailable"]) {
    assert.ok(sdk[name].prototype instanceof ServiceUnavailable, name);
  }
});

test("a token never shows in the client's printout, nor a line-broken one in its error", async () => {
  const token = await mint();
  const vc = client(`http://user:pass@127.0.0.1:${broker.port}`, token);
  assert.ok(
    !inspect(vc).includes(token) && !inspect(vc, { showHidden: true }).includes("pass"),
    inspect(vc),
  );
  assert.ok(!JSON.stringify(vc).includes(token));
  const forged = `${token}\r\nX-Evil: 1`;
  const start = broker.audit().length;
  const error = await call(() => client(broker.url, forged).get("dev", "PORT"));
  assert.ok(error instanceof sdk.VaultError, String(error));
  assert.equal(error.message, "the token holds characters a bearer token cannot have");
  assertNoToken(token, error);
  assert.equal(broker.audit().length, start); // nothing sent
});

async function call(fn) {
  return fn().then(
    () => assert.fail("no error"),
    (e) => e,
  );
}

async function startRedis() {
  const port = await freePort();
  const dir = tempDir();
  const child = spawn(
    "redis-server",
    [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--dir",
      dir,
    ],
    { stdio: "ignore" },
  );
  const exited = new Promise((done) => child.once("exit", done));
  await poll(() => ping(port), "redis-server to answer PING");
  return {
    url: `redis://127.0.0.1:${port}/0`,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        await exited;
      }
    },
  };
}

function ping(port) {
  return new Promise((done) => {
    const socket = net.connect(port, "127.0.0.1", () => socket.write("PING\r\n"));
    socket.once("data", (data) => {
      socket.destroy();
      done(data.toString().startsWith("+PONG"));
    });
    socket.once("error", () => done(false));
  });
}
