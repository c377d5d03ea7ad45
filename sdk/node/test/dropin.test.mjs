// The drop-in, proven: one body of code written for SecretsManagerClient of
// @aws-sdk/client-secrets-manager runs against moto's Secrets Manager and against
// VaultClient with a broker holding the same secret, and reads the same SecretString.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { after, before, test } from "node:test";

import * as aws from "@aws-sdk/client-secrets-manager";
import * as vanta from "@vanta-vault/client";

import {
  VENV_BIN,
  cleanEnv,
  freePort,
  makeRepo,
  mint,
  poll,
  rawRequest,
  startBroker,
} from "./support.mjs";

const SECRET_ID = "prod/DATABASE_URL";

/** Service code as written for AWS; the migration changes only where `SecretsManagerClient`
 * and `GetSecretValueCommand` are imported from, and how the client is made. */
async function readDatabaseUrl({ SecretsManagerClient, GetSecretValueCommand }) {
  const client = new SecretsManagerClient({});
  const answer = await client.send(new GetSecretValueCommand({ SecretId: SECRET_ID }));
  return answer;
}

let repo;
let broker;
let moto;

before(async () => {
  repo = await makeRepo();
  broker = await startBroker(repo);
  moto = await startMoto();
  // What each client reads from its environment, as a deployed service would have it.
  Object.assign(process.env, {
    AWS_ENDPOINT_URL: moto.url,
    AWS_REGION: "us-east-1",
    AWS_ACCESS_KEY_ID: "testing",
    AWS_SECRET_ACCESS_KEY: "testing",
    VANTA_BROKER_URL: broker.url,
    VANTA_TOKEN: await mint({ environment: "prod", keyPattern: "DATABASE_*" }),
  });
  const setup = new aws.SecretsManagerClient({});
  await setup.send(
    new aws.CreateSecretCommand({ Name: SECRET_ID, SecretString: repo.prod.DATABASE_URL }),
  );
});

after(async () => {
  await broker?.stop();
  await moto?.stop();
});

test("code written for SecretsManagerClient reads the same SecretString from moto and from the broker", async () => {
  const fromAws = await readDatabaseUrl(aws);
  const fromVault = await readDatabaseUrl({
    SecretsManagerClient: vanta.VaultClient,
    GetSecretValueCommand: vanta.GetSecretValueCommand,
  });
  for (const answer of [fromAws, fromVault]) {
    assert.equal(answer.Name, SECRET_ID);
    assert.ok(answer.VersionStages.includes("AWSCURRENT"));
    assert.ok(answer.CreatedDate instanceof Date);
    assert.equal(typeof answer.VersionId, "string");
  }
  assert.equal(fromVault.SecretString, fromAws.SecretString);
  assert.equal(fromVault.SecretString, repo.prod.DATABASE_URL);
  assert.equal(fromVault.VersionId, repo.commits.at(-1));
});

test("VaultClient.send also takes AWS's own GetSecretValueCommand", async () => {
  const vc = new vanta.VaultClient();
  const answer = await vc.send(new aws.GetSecretValueCommand({ SecretId: SECRET_ID }));
  assert.equal(answer.SecretString, repo.prod.DATABASE_URL);
  await assert.rejects(
    vc.send(new aws.ListSecretsCommand({})),
    /takes a GetSecretValueCommand, not ListSecretsCommand/,
  );
});

async function startMoto() {
  const port = await freePort();
  const child = spawn(join(VENV_BIN, "moto_server"), ["-H", "127.0.0.1", "-p", String(port)], {
    env: cleanEnv(),
    stdio: "ignore",
  });
  const exited = new Promise((done) => child.once("exit", done));
  const url = `http://127.0.0.1:${port}`;
  await poll(
    () =>
      rawRequest(`${url}/`).then(
        () => true,
        () => child.exitCode !== null,
      ),
    "moto_server",
    60_000,
  );
  assert.equal(child.exitCode, null, "moto_server exited");
  return {
    url,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        await exited;
      }
    },
  };
}
