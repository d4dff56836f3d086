/**
 * The real OpenID provider of the Python identity tests (`tests/oidc_provider/server.mjs`,
 * the certified `oidc-provider` package), started here on 127.0.0.1: it prints one JSON line
 * `{"alpha": "http://127.0.0.1:PORT"}` once listening and exits when its stdin closes.
 * Tokens come from its token endpoint (client credentials; the user the token speaks for is
 * carried in the registered client's `tenantry_claims`, as tests/identity/conftest.py does).
 *
 * Without its `node_modules`, `npm ci` runs first (under the same `flock` as the Python
 * fixture when `flock` exists). If it cannot start: under `CI=true` an error (CI must run
 * these tests), otherwise a skip reason the suite shows.
 */
import { spawn, spawnSync, type ChildProcessByStdio } from "node:child_process";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import type { Readable, Writable } from "node:stream";

export const AUDIENCE = "https://api.tenantry.test";
const PROVIDER_DIR = resolve(process.cwd(), "../../tests/oidc_provider");
const INSTALLED = "node_modules/oidc-provider/package.json";
const START_TIMEOUT_MS = 30_000;
const NPM_CI_TIMEOUT_MS = 300_000;

export interface OidcProvider {
  issuers: Record<string, string>;
  stop(): Promise<void>;
}

/** `null` when installed (now or before), else why not. */
function install(): string | null {
  if (existsSync(resolve(PROVIDER_DIR, INSTALLED))) return null;
  if (!existsSync(resolve(PROVIDER_DIR, "package-lock.json"))) return `no ${PROVIDER_DIR}/package-lock.json`;
  const npmCi = `test -f ${INSTALLED} || npm ci --no-audit --no-fund --loglevel=error`;
  const hasFlock = spawnSync("flock", ["--version"], { stdio: "ignore" }).status === 0;
  const [command, args] = hasFlock
    ? ["flock", [resolve(PROVIDER_DIR, ".npm-ci.lock"), "sh", "-c", npmCi]]
    : ["sh", ["-c", npmCi]];
  const result = spawnSync(command, args, {
    cwd: PROVIDER_DIR,
    encoding: "utf8",
    timeout: NPM_CI_TIMEOUT_MS,
    stdio: ["ignore", "pipe", "pipe"],
  });
  if (result.status === 0 && existsSync(resolve(PROVIDER_DIR, INSTALLED))) return null;
  return `npm ci in tests/oidc_provider failed: ${(result.error?.message ?? result.stderr ?? "").trim()}`;
}

function start(names: string[]): Promise<OidcProvider> {
  const child: ChildProcessByStdio<Writable, Readable, Readable> = spawn(
    process.execPath,
    ["server.mjs", ...names],
    { cwd: PROVIDER_DIR, stdio: ["pipe", "pipe", "pipe"] },
  );
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((done) => child.once("exit", done));
    child.stdin.end(); // the server exits when its standard input closes
    await Promise.race([exited, new Promise((done) => setTimeout(done, 10_000))]);
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  };
  return new Promise((done, fail) => {
    let stdout = "";
    const timer = setTimeout(() => {
      void stop();
      fail(new Error(`the OpenID provider did not start within ${START_TIMEOUT_MS} ms: ${stderr}`));
    }, START_TIMEOUT_MS);
    child.once("exit", (code) => {
      clearTimeout(timer);
      fail(new Error(`the OpenID provider exited (${code}): ${stderr}`));
    });
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      stdout += chunk;
      const end = stdout.indexOf("\n");
      if (end < 0) return;
      clearTimeout(timer);
      child.stdout.removeAllListeners("data");
      child.stdout.resume();
      try {
        done({ issuers: JSON.parse(stdout.slice(0, end)) as Record<string, string>, stop });
      } catch (error) {
        void stop();
        fail(error instanceof Error ? error : new Error(String(error)));
      }
    });
  });
}

/** The started provider, or the reason it could not start (a thrown error under CI=true). */
export async function startProvider(names: string[]): Promise<OidcProvider | { skip: string }> {
  let reason = install();
  if (reason === null) {
    try {
      return await start(names);
    } catch (error) {
      reason = error instanceof Error ? error.message : String(error);
    }
  }
  if (process.env["CI"] === "true") {
    throw new Error(`CI must run the external-identity client tests: ${reason}`);
  }
  const skip = `needs the OpenID provider of tests/oidc_provider (npm ci there): ${reason}`;
  process.stderr.write(`SKIPPED: ${skip}\n`);
  return { skip };
}

/** A JWT access token from `issuer`'s token endpoint, for the user `claims` describe. */
export async function issueToken(
  issuer: string,
  claims: Record<string, unknown>,
  { alg = "RS256", audience = AUDIENCE }: { alg?: "RS256" | "ES256"; audience?: string } = {},
): Promise<string> {
  const registered = await fetch(`${issuer}/reg`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ redirect_uris: [], tenantry_alg: alg, tenantry_claims: claims }),
  });
  if (registered.status !== 201) throw new Error(`registration: ${registered.status} ${await registered.text()}`);
  const client = (await registered.json()) as { client_id: string; client_secret: string };
  const issued = await fetch(`${issuer}/token`, {
    method: "POST",
    body: new URLSearchParams({
      grant_type: "client_credentials",
      client_id: client.client_id,
      client_secret: client.client_secret,
      resource: audience,
      scope: "api",
    }),
  });
  if (issued.status !== 200) throw new Error(`token: ${issued.status} ${await issued.text()}`);
  return ((await issued.json()) as { access_token: string }).access_token;
}
