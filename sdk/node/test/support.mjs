// Real things for the tests: a Git repository of sops files (built by fixtures.py with the
// Python suite's fixtures), brokers run with `vanta-broker serve` from the project's venv,
// tokens minted with `vanta-cli token generate --offline`, the broker's audit log, and a
// small scripted HTTP server that stands in front of a real broker to answer oddly.

import { execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import * as http from "node:http";
import * as https from "node:https";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);
const HERE = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(HERE, "../../..");
export const VENV_BIN = process.env.VANTA_VENV_BIN ?? join(ROOT, ".venv", "bin");
export const SIGNING_KEY = "node-sdk-test-signing-key-0123456789-abcdef";
const GIT_ENV = {
  GIT_AUTHOR_NAME: "Ada Tester",
  GIT_AUTHOR_EMAIL: "ada@example.com",
  GIT_COMMITTER_NAME: "Ada Tester",
  GIT_COMMITTER_EMAIL: "ada@example.com",
  GIT_CONFIG_NOSYSTEM: "1",
};
const STARTUP_MS = 60_000; // a loaded 2-core CI machine starts a broker slowly

// Whatever a test file started goes when it ends, however it ends.
const children = new Set();
const dirs = new Set();
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL");
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** The environment without the client's and broker's own variables. */
export function cleanEnv(extra = {}) {
  const env = Object.fromEntries(
    Object.entries(process.env).filter(
      ([name]) => !name.startsWith("VANTA_") && !name.startsWith("AWS_"),
    ),
  );
  return { ...env, ...GIT_ENV, ...extra };
}

/** A private temporary directory, removed when the test file ends. */
export function tempDir() {
  const dir = mkdtempSync(join(tmpdir(), "vanta-node-"));
  dirs.add(dir);
  return dir;
}

async function fixture(command, dir) {
  const { stdout } = await run(
    join(VENV_BIN, "python"),
    [join(HERE, "fixtures.py"), command, dir],
    {
      env: cleanEnv(),
    },
  );
  return JSON.parse(stdout);
}

/** An age identity and a Git repository with dev, prod and broken environments (fixtures.py). */
export async function makeRepo() {
  const dir = tempDir();
  return { dir, ...(await fixture("repo", dir)) };
}

/** CA, broker and client certificates (trustme). */
export async function makePki(dir) {
  return fixture("pki", join(dir, `pki-${Date.now()}`));
}

export async function git(repo, ...args) {
  const { stdout } = await run("git", ["-C", repo, ...args], { env: cleanEnv() });
  return stdout.trim();
}

export async function freePort() {
  const server = net.createServer();
  await new Promise((done) => server.listen(0, "127.0.0.1", done));
  const { port } = server.address();
  await new Promise((done) => server.close(done));
  return port;
}

/** A token signed locally with the brokers' signing key. */
export async function mint({
  environment = "*",
  keyPattern = "*",
  permissions = ["secrets:read", "secrets:list"],
  usageLimit,
  subject = "node-sdk-tests",
} = {}) {
  const args = ["token", "generate", "--offline", "--json", "--subject", subject];
  args.push("--environment", environment, "--key-pattern", keyPattern, "--ttl", "60");
  for (const permission of permissions) args.push("--permission", permission);
  if (usageLimit !== undefined) args.push("--usage-limit", String(usageLimit));
  const { stdout } = await run(join(VENV_BIN, "vanta-cli"), args, {
    env: cleanEnv({ VANTA_JWT_SECRET_KEY: SIGNING_KEY }),
  });
  return JSON.parse(stdout).access_token;
}

/** `vanta-broker serve` on the repository; resolves once /healthz answers 200. */
export async function startBroker(repo, { env = {}, args = [], tls } = {}) {
  const dir = tempDir();
  const port = await freePort();
  const auditLog = env.VANTA_AUDIT_LOG ?? join(dir, "audit", "access.jsonl");
  const tlsArgs = tls ? ["--certfile", tls.server, "--keyfile", tls["server-key"]] : [];
  const child = spawn(
    join(VENV_BIN, "vanta-broker"),
    ["serve", "--port", String(port), "--workers", "1", ...tlsArgs, ...args],
    {
      env: cleanEnv({
        VANTA_JWT_SECRET_KEY: SIGNING_KEY,
        VANTA_SOPS_FILES_PATH: repo.secretsDir,
        VANTA_AUDIT_LOG: auditLog,
        VANTA_STATE_DB: join(dir, "state", "broker.db"),
        SOPS_AGE_KEY_FILE: repo.ageKeyFile,
        ...env,
      }),
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  children.add(child);
  let log = "";
  child.stdout.on("data", (chunk) => (log += chunk));
  child.stderr.on("data", (chunk) => (log += chunk));
  const exited = new Promise((done) => child.once("exit", done));
  const url = `${tls ? "https" : "http"}://127.0.0.1:${port}`;
  const broker = {
    url,
    port,
    auditLog,
    log: () => log,
    audit: () => readAudit(auditLog),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGINT"); // a quick shutdown
        const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
        await exited;
        clearTimeout(timer);
      }
      children.delete(child);
    },
  };
  const deadline = Date.now() + STARTUP_MS;
  const healthTls = tls
    ? { ca: readFileSync(tls.ca), cert: readFileSync(tls.client), key: readFileSync(tls.client) }
    : {};
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`the broker exited: ${log}`);
    if ((await status(`${url}/healthz`, healthTls)) === 200) return broker;
    await new Promise((done) => setTimeout(done, 50)); // a poll interval
  }
  await broker.stop();
  throw new Error(`the broker did not start: ${log}`);
}

function status(url, tls) {
  const module = url.startsWith("https:") ? https : http;
  return new Promise((done) => {
    const req = module.get(url, { ...tls, agent: false, timeout: 2000 }, (res) => {
      res.resume();
      done(res.statusCode);
    });
    req.on("timeout", () => req.destroy());
    req.on("error", () => done(0));
  });
}

/** The broker's audit records (one per request to /api/v1/..., whatever its answer). */
export function readAudit(path) {
  if (!existsSync(path)) return [];
  return readFileSync(path, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((line) => JSON.parse(line));
}

/** Waits until `condition()` (possibly async) is true. */
export async function poll(condition, what, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((done) => setTimeout(done, 20));
  }
}

/** A raw request to a broker, outside the SDK (to revoke a token, say). */
export function rawRequest(url, { method = "GET", token, body } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  return new Promise((done, fail) => {
    const req = http.request(url, { method, headers, agent: false }, (res) => {
      let text = "";
      res.on("data", (chunk) => (text += chunk));
      res.on("end", () => done({ status: res.statusCode, body: text }));
    });
    req.on("error", fail);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

/** Records log lines; `lines` holds every one, whatever its level. */
export function recordingLogger() {
  const lines = [];
  return {
    lines,
    warnings: () => lines.filter((line) => line.level === "warn").map((line) => line.message),
    debugs: () => lines.filter((line) => line.level === "debug").map((line) => line.message),
    warn: (message) => lines.push({ level: "warn", message }),
    debug: (message) => lines.push({ level: "debug", message }),
  };
}

/**
 * An HTTP server that answers each request with the next step of `script`, then with
 * `otherwise`. A step: a status (with a broker-style error body for 4xx/503, a proxy's
 * HTML for 502/504), `{ status, body, headers }`, "pass" (forward to `upstream`, a real
 * broker), "reset" (drop the connection unanswered), "pass-then-reset" (forward, let the
 * broker carry it out, then drop the connection: the answer is lost), "hang" (never
 * answer), or a function that is given `release` and holds the request until
 * `release(step)` says what to do with it.
 */
export async function scriptedServer({ script = [], otherwise = "pass", upstream, port = 0 } = {}) {
  const requests = [];
  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const body = Buffer.concat(chunks);
    requests.push({ method: req.method, url: req.url });
    let step = script.length ? script.shift() : otherwise;
    if (typeof step === "function") step = await new Promise((release) => step(release));
    if (step === "hang") return;
    if (step === "reset") return req.socket.destroy();
    if (step === "pass" || step === "pass-then-reset") {
      const answer = await forward(upstream, req, body);
      if (step === "pass-then-reset") return req.socket.destroy();
      res.writeHead(answer.status, answer.headers);
      return res.end(answer.body);
    }
    const { status, body: text, headers } = typeof step === "number" ? canned(step) : step;
    res.writeHead(status, { "Content-Type": "application/json", ...headers });
    res.end(text);
  });
  await new Promise((done) => server.listen(port, "127.0.0.1", done));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    close: () => {
      server.closeAllConnections();
      return new Promise((done) => server.close(done));
    },
  };
}

function canned(status) {
  if (status === 502 || status === 504) {
    return { status, body: "<html>bad gateway</html>", headers: { "Content-Type": "text/html" } };
  }
  const code = { 400: "bad_request", 404: "not_found", 429: "rate_limited", 503: "decrypt_failed" }[
    status
  ];
  return {
    status,
    body: JSON.stringify({
      error: { code: code ?? `http_${status}`, message: "scripted" },
      request_id: "scripted",
    }),
  };
}

function forward(upstream, req, body) {
  return new Promise((done, fail) => {
    const headers = { ...req.headers, host: new URL(upstream).host };
    const out = http.request(
      upstream + req.url,
      { method: req.method, headers, agent: false },
      (res) => {
        const chunks = [];
        res.on("data", (chunk) => chunks.push(chunk));
        res.on("end", () => {
          const { connection, "keep-alive": _, "transfer-encoding": __, ...kept } = res.headers;
          done({ status: res.statusCode, headers: kept, body: Buffer.concat(chunks) });
        });
      },
    );
    out.on("error", fail);
    out.end(body);
  });
}
