// HTTPS and mutual TLS (SPEC §17, §18) against real brokers started with --certfile,
// --keyfile and --client-ca: caBundle, clientCert, clientKey, and VANTA_CA_BUNDLE,
// VANTA_CLIENT_CERT, VANTA_CLIENT_KEY.

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { BrokerUnavailable, VaultClient, VaultError } from "@vanta-vault/client";

import { makePki, makeRepo, mint, recordingLogger, startBroker } from "./support.mjs";

let repo;
let pki;
let https; // TLS only
let mutual; // TLS with a client CA

before(async () => {
  repo = await makeRepo();
  pki = await makePki(repo.dir);
  https = await startBroker(repo, { tls: pki });
  mutual = await startBroker(repo, { tls: pki, args: ["--client-ca", pki.ca] });
});

after(async () => {
  await https?.stop();
  await mutual?.stop();
});

async function rejection(promise) {
  return promise.then(
    () => assert.fail("no error"),
    (e) => e,
  );
}

test("reads over HTTPS trusting the CA bundle given, or VANTA_CA_BUNDLE", async () => {
  const token = await mint({ environment: "dev" });
  const given = new VaultClient({ url: https.url, token, caBundle: pki.ca, env: {} });
  assert.equal((await given.get("dev", "PORT")).value, repo.dev.PORT);
  const fromEnv = new VaultClient({
    env: { VANTA_BROKER_URL: https.url, VANTA_TOKEN: token, VANTA_CA_BUNDLE: pki.ca },
  });
  assert.equal((await fromEnv.getSecretValue({ SecretId: "dev/DEBUG" })).SecretString, "true");
});

test("a broker the CA bundle does not vouch for is BrokerUnavailable in one line, not retried", async () => {
  const token = await mint();
  for (const caBundle of [pki.other, undefined]) {
    const logger = recordingLogger();
    const options = {
      url: https.url,
      token,
      env: {},
      retries: 3,
      logger,
      ...(caBundle ? { caBundle } : {}),
    };
    const error = await rejection(new VaultClient(options).get("dev", "PORT"));
    assert.ok(error instanceof BrokerUnavailable, String(error));
    assert.ok(
      error.message.startsWith(`cannot reach the broker at ${https.url}: TLS handshake failed`),
      error.message,
    );
    assert.ok(!error.message.includes("\n") && !error.message.includes(token));
    assert.deepEqual(logger.debugs(), []); // a certificate does not become valid by asking again
  }
});

const CLIENT_CERTIFICATES = [
  ["one PEM with certificate and key", (p) => ({ caBundle: p.ca, clientCert: p.client, env: {} })],
  [
    "certificate and key paths",
    (p) => ({ caBundle: p.ca, clientCert: p["client-cert"], clientKey: p["client-key"], env: {} }),
  ],
  [
    "VANTA_CA_BUNDLE, VANTA_CLIENT_CERT and VANTA_CLIENT_KEY",
    (p) => ({
      env: {
        VANTA_CA_BUNDLE: p.ca,
        VANTA_CLIENT_CERT: p["client-cert"],
        VANTA_CLIENT_KEY: p["client-key"],
      },
    }),
  ],
];

for (const [name, options] of CLIENT_CERTIFICATES) {
  test(`reads over mutual TLS: ${name}`, async () => {
    const vc = new VaultClient({
      url: mutual.url,
      token: await mint({ environment: "dev" }),
      ...options(pki),
    });
    assert.equal((await vc.get("dev", "DATABASE_URL")).value, repo.dev.DATABASE_URL);
    assert.match(mutual.audit().at(-1).client_cert, /^CN=billing-api,/);
  });
}

test("without a client certificate the mutual-TLS broker refuses the handshake", async () => {
  const vc = new VaultClient({
    url: mutual.url,
    token: await mint(),
    caBundle: pki.ca,
    env: {},
    retries: 1,
  });
  const start = mutual.audit().length;
  const error = await rejection(vc.get("dev", "PORT"));
  assert.ok(error instanceof BrokerUnavailable, String(error));
  assert.ok(error.message.startsWith(`cannot reach the broker at ${mutual.url}: `), error.message);
  assert.equal(mutual.audit().length, start);
});

test("an unreadable certificate file is a VaultError naming it, and no breaker failure", async () => {
  const missing = join(repo.dir, "nowhere.pem");
  const vc = new VaultClient({
    url: https.url,
    token: await mint(),
    caBundle: missing,
    env: {},
    breakerThreshold: 1,
  });
  const error = await rejection(vc.get("dev", "PORT"));
  assert.ok(error instanceof VaultError && !(error instanceof BrokerUnavailable), String(error));
  assert.match(error.message, /^TLS settings: .*nowhere\.pem/);
  assert.equal(vc.breakerState, "closed");
});

test("a client key without a certificate is refused when the client is made", () => {
  assert.throws(
    () => new VaultClient({ env: { VANTA_CLIENT_KEY: pki["client-key"] } }),
    VaultError,
  );
  assert.throws(() => new VaultClient({ clientKey: pki["client-key"], env: {} }), VaultError);
});
