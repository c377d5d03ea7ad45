// The cache, stale answers when the broker is gone, retries, the circuit breaker and the
// single flight (SPEC §12, §18), against a real broker; a scripted server stands in
// front of it where an odd answer (a reset, a 502, a lost answer) is needed.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  BadRequest,
  BrokerError,
  BrokerUnavailable,
  DecryptFailed,
  NotFound,
  RateLimited,
  ServiceUnavailable,
  TokenRevoked,
  VaultClient,
} from "@vanta-vault/client";

import {
  freePort,
  makeRepo,
  mint,
  poll,
  rawRequest,
  recordingLogger,
  scriptedServer,
  startBroker,
} from "./support.mjs";

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

function sdk(url, token, options = {}) {
  return new VaultClient({
    url,
    token,
    env: {},
    backoffMs: 10,
    logger: recordingLogger(),
    ...options,
  });
}

/** The broker's audit records from `start` on (one per request it got). */
function since(start, what = () => true) {
  return broker.audit().slice(start).filter(what);
}

const isRead = (key) => (r) => r.event === "secret.read" && r.key === key;

async function scripted(options) {
  const server = await scriptedServer({ upstream: broker.url, ...options });
  stops.push(() => server.close());
  return server;
}

async function rejection(promise) {
  return promise.then(
    () => assert.fail("no error"),
    (e) => e,
  );
}

// -- the cache -------------------------------------------------------------------------

test("a one-use token reads twice within the TTL with one request", async () => {
  const vc = sdk(broker.url, await mint({ environment: "dev", usageLimit: 1 }));
  const start = broker.audit().length;
  assert.equal((await vc.get("dev", "PORT")).value, repo.dev.PORT);
  assert.equal((await vc.get("dev", "PORT")).value, repo.dev.PORT);
  assert.equal(since(start).length, 1);
});

test("after the TTL the broker is asked again; with cacheTtlMs 0, every time", async () => {
  const ttl = 300;
  const vc = sdk(broker.url, await mint(), { cacheTtlMs: ttl });
  const start = broker.audit().length;
  const fetched = performance.now();
  await vc.get("dev", "DEBUG");
  await poll(async () => {
    await vc.get("dev", "DEBUG");
    return since(start).length === 2;
  }, "a second request");
  assert.ok(performance.now() - fetched >= ttl, "asked again only once the TTL was over");

  const uncached = sdk(broker.url, await mint(), { cacheTtlMs: 0 });
  const before = broker.audit().length;
  for (let i = 0; i < 3; i++) await uncached.get("dev", "DEBUG");
  assert.equal(since(before).length, 3);
});

test("batches, lists, history and versions are cached by what was asked", async () => {
  const vc = sdk(broker.url, await mint({ environment: "dev" }));
  const start = broker.audit().length;
  for (let i = 0; i < 2; i++) {
    await vc.getMany("dev", { pattern: "DATABASE_*" });
    await vc.getMany("dev", { keys: ["PORT"] });
    await vc.list("dev");
    await vc.list("dev", { pattern: "D*" });
    await vc.history("dev", "PORT");
    await vc.get("dev", "PORT", { version: repo.commits[0] });
  }
  assert.equal(since(start).length, 6);
  const values = await vc.getMany("dev", { keys: ["PORT"] });
  values.PORT = "changed by the caller";
  assert.deepEqual(await vc.getMany("dev", { keys: ["PORT"] }), { PORT: repo.dev.PORT });
});

test("a 401 or 403 empties the cache and is never retried", async () => {
  const token = await mint();
  const vc = sdk(broker.url, token, { retries: 3 });
  await vc.get("dev", "PORT");
  const answer = await rawRequest(`${broker.url}/api/v1/vault/tokens/revoke-self`, {
    method: "POST",
    token,
  });
  assert.equal(answer.status, 200);
  const start = broker.audit().length;
  await assert.rejects(vc.get("dev", "DEBUG"), TokenRevoked);
  await assert.rejects(vc.get("dev", "PORT"), TokenRevoked); // no longer served from memory
  assert.deepEqual(
    since(start).map((r) => r.status),
    [403, 403],
  );
});

// -- stale answers ---------------------------------------------------------------------

test("with the broker stopped, the cache serves until maxStaleMs, then the error", async () => {
  const maxStale = 6000; // room for the broker's shutdown before the first stale read
  const own = await startBroker(repo);
  stops.push(() => own.stop());
  const token = await mint();
  const logger = recordingLogger();
  const vc = sdk(own.url, token, { cacheTtlMs: 300, maxStaleMs: maxStale, retries: 1, logger });
  const fetchedAfter = performance.now();
  assert.equal((await vc.get("dev", "DATABASE_URL")).value, repo.dev.DATABASE_URL);
  const fetchedBefore = performance.now();
  await own.stop();
  const outcomes = []; // [started, ended, value or error]
  await poll(async () => {
    const started = performance.now();
    const outcome = await vc.get("dev", "DATABASE_URL").then(
      (s) => s.value,
      (e) => e,
    );
    outcomes.push([started, performance.now(), outcome]);
    return outcome instanceof BrokerUnavailable;
  }, "the stale answer to expire");
  const served = outcomes.filter(([, , outcome]) => outcome === repo.dev.DATABASE_URL);
  // served means at most maxStale old when looked at; failed, older than that
  assert.ok(served.length > 0 && served.every(([started]) => started <= fetchedBefore + maxStale));
  assert.equal(served.length, outcomes.length - 1);
  const [, failedBy, error] = outcomes.at(-1);
  assert.ok(failedBy > fetchedAfter + maxStale);
  assert.match(error.message, /cannot reach the broker|circuit open/);
  const [first] = logger.warnings();
  assert.match(
    first,
    /^serving a cached answer \d+\.\ds old for GET \/api\/v1\/vault\/dev\/DATABASE_URL: /,
  );
  assert.match(first, /cannot reach the broker at http:\/\/127\.0\.0\.1:\d+: connection refused/);
  for (const { message } of logger.lines) {
    assert.ok(!message.includes(repo.dev.DATABASE_URL) && !message.includes(token), message);
  }
});

test("a 503 answer serves the stale value, a 429 does not", async () => {
  const server = await scripted({ script: ["pass", 503, 429] });
  const logger = recordingLogger();
  const vc = sdk(server.url, await mint(), {
    cacheTtlMs: 200,
    maxStaleMs: 60_000,
    retries: 0,
    logger,
  });
  assert.equal((await vc.get("dev", "PORT")).value, repo.dev.PORT);
  await poll(async () => {
    assert.equal((await vc.get("dev", "PORT")).value, repo.dev.PORT);
    return server.requests.length === 2;
  }, "the TTL to pass");
  assert.match(logger.warnings()[0], /503 decrypt_failed/);
  await assert.rejects(vc.get("dev", "PORT"), RateLimited);
});

// -- retries ---------------------------------------------------------------------------

test("transport errors and 502/503/504 are retried up to the real answer", async () => {
  const server = await scripted({ script: ["reset", 502, 503, 504] });
  const vc = sdk(server.url, await mint(), { retries: 4, cacheTtlMs: 0 });
  const start = broker.audit().length;
  assert.equal((await vc.get("dev", "PORT")).value, repo.dev.PORT);
  assert.equal(server.requests.length, 5);
  assert.deepEqual(
    since(start, isRead("PORT")).map((r) => r.status),
    [200],
  );
});

test("retries N means N more attempts, then the last error", async () => {
  const server = await scripted({ otherwise: 503 });
  await assert.rejects(sdk(server.url, "t", { retries: 2 }).get("dev", "PORT"), DecryptFailed);
  assert.equal(server.requests.length, 3);
  await assert.rejects(sdk(server.url, "t", { retries: 0 }).get("dev", "PORT"), DecryptFailed);
  assert.equal(server.requests.length, 4);
});

test("no other answer is retried", async () => {
  const server = await scripted({ script: [500, 429, 404, 400] });
  const vc = sdk(server.url, "t", { retries: 3, cacheTtlMs: 0 });
  const errors = [];
  for (let i = 0; i < 4; i++) errors.push(await rejection(vc.get("dev", "PORT")));
  assert.deepEqual(
    errors.map((e) => e.constructor),
    [BrokerError, RateLimited, NotFound, BadRequest],
  );
  assert.equal(server.requests.length, 4);
});

test("a POST whose answer was lost, or that got 502 or 504, is not sent again", async () => {
  const server = await scripted({ script: ["pass-then-reset", 502, 504] });
  const vc = sdk(server.url, await mint({ environment: "dev" }), { retries: 3 });
  const start = broker.audit().length;
  const lost = await rejection(vc.getMany("dev", { keys: ["PORT"] }));
  assert.ok(lost instanceof BrokerUnavailable, String(lost));
  assert.equal(server.requests.length, 1);
  // the broker carried it out (a use of a limited token): a second attempt would use another
  assert.deepEqual(
    since(start).map((r) => [r.event, r.status]),
    [["secret.batch", 200]],
  );
  await assert.rejects(vc.getMany("dev", { keys: ["DEBUG"] }), BrokerError);
  await assert.rejects(vc.getMany("dev", { keys: ["DEBUG"] }), BrokerError);
  assert.equal(server.requests.length, 3);
});

test("a GET whose answer was lost is sent again", async () => {
  const server = await scripted({ script: ["pass-then-reset"] });
  const vc = sdk(server.url, await mint(), { retries: 1 });
  assert.equal((await vc.get("dev", "DEBUG")).value, repo.dev.DEBUG);
  assert.equal(server.requests.length, 2);
});

test("a POST that got 503 is retried", async () => {
  const server = await scripted({ script: [503] });
  const vc = sdk(server.url, await mint({ environment: "dev" }), { retries: 1 });
  assert.deepEqual(await vc.getMany("dev", { keys: ["PORT"] }), { PORT: repo.dev.PORT });
  assert.equal(server.requests.length, 2);
});

test("a POST that never reached the broker (connection refused) is retried", async () => {
  const port = await freePort(); // nothing listens there yet
  const logger = recordingLogger();
  const vc = sdk(`http://127.0.0.1:${port}`, await mint({ environment: "dev" }), {
    retries: 50,
    backoffMs: 50,
    backoffMaxMs: 100,
    logger,
  });
  const batch = vc.getMany("dev", { pattern: "DATABASE_*" });
  await poll(() => logger.debugs().length > 0, "a refused attempt");
  const server = await scripted({ port });
  assert.deepEqual(Object.keys(await batch).sort(), ["DATABASE_URL", "DATABASE_USER"]);
  assert.match(logger.debugs()[0], /^attempt 1 failed \(connection refused\); retrying in \d+ms$/);
  assert.equal(server.requests.length, 1);
});

test("a GET is retried after a timeout; without retries, the timeout is BrokerUnavailable", async () => {
  const server = await scripted({ script: ["hang"] });
  const logger = recordingLogger();
  const vc = sdk(server.url, await mint(), { retries: 1, timeoutMs: 3000, logger });
  assert.equal((await vc.get("dev", "PORT")).value, repo.dev.PORT);
  assert.equal(server.requests.length, 2);
  assert.match(logger.debugs()[0], /attempt 1 failed \(timed out\)/);
  const silent = await scripted({ otherwise: "hang" });
  const error = await rejection(
    sdk(silent.url, "t", { retries: 0, timeoutMs: 1000 }).get("dev", "PORT"),
  );
  assert.ok(error instanceof BrokerUnavailable);
  assert.equal(error.message, `the broker at ${silent.url} did not answer within 1s`);
});

test("backoff is full jitter within the exponential window", async () => {
  const retries = 8;
  const server = await scripted({ script: Array(retries).fill(503) });
  const logger = recordingLogger();
  const options = { retries, backoffMs: 40, backoffMaxMs: 200, logger };
  assert.equal(
    (await sdk(server.url, await mint(), options).get("dev", "PORT")).value,
    repo.dev.PORT,
  );
  const waits = logger.debugs().map((line) => Number(/retrying in (\d+)ms/.exec(line)[1]));
  const ceilings = waits.map((_, n) => Math.min(200, 40 * 2 ** n));
  assert.equal(waits.length, retries);
  assert.ok(
    waits.every((wait, n) => wait >= 0 && wait <= ceilings[n] + 1),
    `${waits} within ${ceilings}`,
  );
  assert.ok(
    waits.some((wait, n) => wait < 0.9 * ceilings[n]),
    `${waits}: drawn, not the ceiling`,
  );
});

// -- the circuit breaker ---------------------------------------------------------------

test("once the breaker is open, calls fail fast without a request", async () => {
  const server = await scripted({ otherwise: 503 });
  const vc = sdk(server.url, "t", { retries: 0, breakerThreshold: 3, breakerCooldownMs: 60_000 });
  for (let i = 0; i < 3; i++) await assert.rejects(vc.get("dev", "PORT"), ServiceUnavailable);
  assert.equal(vc.breakerState, "open");
  for (let i = 0; i < 10; i++) {
    const error = await rejection(vc.get("dev", `KEY_${i}`));
    assert.ok(error instanceof BrokerUnavailable);
    assert.match(
      error.message,
      /^circuit open: the broker at \S+ failed 3 calls in a row \(next try in \d+\.\ds\)$/,
    );
  }
  assert.equal(server.requests.length, 3);
});

test("after the cooldown one trial goes while the others fail fast; its success closes it", async () => {
  let release;
  const held = (r) => (release = r);
  const server = await scripted({ script: [503, 503, held] });
  const vc = sdk(server.url, await mint(), {
    retries: 0,
    cacheTtlMs: 0,
    breakerThreshold: 2,
    breakerCooldownMs: 2000,
  });
  for (let i = 0; i < 2; i++) await assert.rejects(vc.get("dev", "PORT"), ServiceUnavailable);
  await poll(() => vc.breakerState === "half-open", "the cooldown");
  const keys = ["PORT", "DEBUG", "DATABASE_URL", "DATABASE_USER", "API_KEYS/openai"];
  const calls = keys.map((key) => vc.get("dev", key));
  const [trial, ...others] = calls;
  for (const other of others) {
    const error = await rejection(other);
    assert.match(error.message, /circuit open: .* \(a trial call is under way\)$/);
  }
  await poll(() => release !== undefined, "the trial to reach the server");
  assert.equal(server.requests.length, 3);
  release("pass");
  assert.equal((await trial).value, repo.dev.PORT);
  assert.equal(vc.breakerState, "closed");
  assert.equal((await vc.get("dev", "DEBUG")).value, repo.dev.DEBUG);
  assert.equal(server.requests.length, 4);
});

test("a failed trial opens the breaker again", async () => {
  const server = await scripted({ script: [503, 503, 503] });
  const vc = sdk(server.url, "t", {
    retries: 0,
    cacheTtlMs: 0,
    breakerThreshold: 2,
    breakerCooldownMs: 2000, // longer than any stall between two calls of a loaded machine
  });
  for (let i = 0; i < 2; i++) await assert.rejects(vc.get("dev", "PORT"), ServiceUnavailable);
  await poll(() => vc.breakerState === "half-open", "the cooldown");
  await assert.rejects(vc.get("dev", "PORT"), ServiceUnavailable); // the trial
  assert.equal(vc.breakerState, "open");
  await assert.rejects(vc.get("dev", "PORT"), /circuit open/);
  assert.equal(server.requests.length, 3);
});

test("any other answer resets the failure count", async () => {
  const server = await scripted({ script: [503, 503, 404, 503, 503] });
  const vc = sdk(server.url, await mint(), { retries: 0, cacheTtlMs: 0, breakerThreshold: 3 });
  for (const expected of [
    ServiceUnavailable,
    ServiceUnavailable,
    NotFound,
    ServiceUnavailable,
    ServiceUnavailable,
  ]) {
    await assert.rejects(vc.get("dev", "PORT"), expected);
  }
  assert.equal(vc.breakerState, "closed");
  assert.equal((await vc.get("dev", "PORT")).value, repo.dev.PORT);
});

test("an open breaker still serves stale answers", async () => {
  const server = await scripted({ script: ["pass"], otherwise: 502 });
  const vc = sdk(server.url, await mint(), {
    retries: 0,
    cacheTtlMs: 200,
    maxStaleMs: 60_000,
    breakerThreshold: 1,
    breakerCooldownMs: 60_000,
  });
  assert.equal((await vc.get("dev", "PORT")).value, repo.dev.PORT);
  await poll(async () => {
    assert.equal((await vc.get("dev", "PORT")).value, repo.dev.PORT);
    return server.requests.length === 2; // the 502 opened the breaker, served stale
  }, "the TTL to pass");
  assert.equal(vc.breakerState, "open");
  assert.equal((await vc.get("dev", "PORT")).value, repo.dev.PORT); // refused at once, served stale
  await assert.rejects(vc.get("dev", "DEBUG"), /circuit open/);
  assert.equal(server.requests.length, 2);
});

// -- one request for concurrent misses -------------------------------------------------

test("concurrent calls for one uncached value make one request", async () => {
  const keys = ["DATABASE_URL", "DATABASE_USER", "PORT", "DEBUG"];
  const token = await mint({ environment: "dev", usageLimit: keys.length + 1 }); // one more: the batch
  const vc = sdk(broker.url, token, { retries: 1 });
  const start = broker.audit().length;
  const worker = async (offset) => {
    const got = {};
    for (let i = 0; i < 50; i++) {
      const key = keys[(offset + i) % keys.length];
      got[key] = (await vc.get("dev", key)).value;
    }
    return got;
  };
  const seen = await Promise.all(Array.from({ length: 16 }, (_, n) => worker(n)));
  const expected = Object.fromEntries(keys.map((key) => [key, repo.dev[key]]));
  assert.deepEqual(seen, Array(16).fill(expected));
  const batches = await Promise.all(
    Array.from({ length: 8 }, () => vc.getMany("dev", { pattern: "DATABASE_*" })),
  );
  assert.equal(new Set(batches.map((b) => JSON.stringify(b))).size, 1);
  const requests = since(start);
  assert.deepEqual(requests.map((r) => r.key ?? "batch").sort(), [...keys, "batch"].sort());
  assert.ok(requests.every((r) => r.status === 200));
});
