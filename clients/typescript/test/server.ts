/** Starts `tenantry serve` on SQLite (a throwaway directory, a free 127.0.0.1 port). */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export interface Served {
  baseUrl: string;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => done(port));
    });
  });
}

/** `TENANTRY_BIN` (set by `make client-test`), else the repository's virtualenv. */
function tenantryBin(): string {
  const bin = process.env["TENANTRY_BIN"] ?? resolve(process.cwd(), "../../.venv/bin/tenantry");
  if (!existsSync(bin)) throw new Error(`tenantry not found at ${bin}: run \`make setup\` first`);
  return bin;
}

/** `extraEnv` adds settings (e.g. `AUTH_PROVIDERS`) to the server's environment. */
export async function serve(extraEnv: Record<string, string> = {}): Promise<Served> {
  const dir = mkdtempSync(join(tmpdir(), "tenantry-client-"));
  const port = await freePort();
  const logPath = join(dir, "serve.log");
  const { openSync } = await import("node:fs");
  const log = openSync(logPath, "w");
  const child: ChildProcess = spawn(tenantryBin(), ["serve", "--migrate"], {
    env: {
      ...process.env,
      ENV: "development",
      HOST: "127.0.0.1",
      PORT: String(port),
      VAR_DIR: dir,
      DATABASE_URL: `sqlite+aiosqlite:///${join(dir, "client.db")}`,
      REDIS_URL: "",
      RATE_LIMIT_ENABLED: "false",
      PASSWORD_HASH_TIME_COST: "1",
      PASSWORD_HASH_MEMORY_KIB: "1024",
      PASSWORD_HASH_PARALLELISM: "1",
      ...extraEnv,
    },
    stdio: ["ignore", log, log],
  });
  const baseUrl = `http://127.0.0.1:${port}`;
  const stop = async (): Promise<void> => {
    if (child.exitCode === null) {
      const exited = new Promise((done) => child.once("exit", done));
      child.kill("SIGTERM");
      await Promise.race([exited, new Promise((done) => setTimeout(done, 10_000))]);
      if (child.exitCode === null) child.kill("SIGKILL");
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) {
      const output = readFileSync(logPath, "utf8");
      await stop();
      throw new Error(`tenantry serve exited (${child.exitCode}):\n${output}`);
    }
    try {
      const ready = await fetch(`${baseUrl}/health/ready`);
      if (ready.ok) return { baseUrl, stop };
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error("tenantry serve did not become ready within 60 s");
    }
    await new Promise((done) => setTimeout(done, 250));
  }
}
