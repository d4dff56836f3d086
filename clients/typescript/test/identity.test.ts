/**
 * The client with an external identity provider's token (`accessToken`), against a live
 * `tenantry serve` (SQLite) trusting a real OpenID provider (oidc-provider, started here):
 * the user is created just in time and works in an organization; an expired token is
 * replaced by ONE forced call for concurrent 401s; a request that failed with a token
 * already replaced retries with the newer one; no token back ends the session.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { createTenantryClient, isApiError, unwrap, type AccessTokenProvider } from "../src/index.js";
import { AUDIENCE, issueToken, startProvider, type OidcProvider } from "./oidc.js";
import { serve, type Served } from "./server.js";

const started = await startProvider(["alpha"]);
const skip = "skip" in started ? started.skip : false;

interface Sent {
  method: string;
  path: string;
  token: string | null;
  status: number;
  code: string | null;
}

/** A fetch that records each request's path and bearer token and the answer's status/code. */
function recordingFetch(
  log: Sent[],
  hold?: (request: Request, response: Response) => Promise<void>,
): typeof fetch {
  return async (input: RequestInfo | URL, init?: RequestInit) => {
    const request = input instanceof Request ? input : new Request(input, init);
    const token = request.headers.get("authorization")?.replace(/^Bearer /, "") ?? null;
    const response = await fetch(request);
    const body: unknown = response.status >= 400 ? await response.clone().json().catch(() => null) : null;
    const code = typeof body === "object" && body !== null && "code" in body ? String(body.code) : null;
    log.push({ method: request.method, path: new URL(request.url).pathname, token, status: response.status, code });
    await hold?.(request, response);
    return response;
  };
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([
    promise,
    new Promise<never>((_, fail) => setTimeout(() => fail(new Error(`${what}: not within ${ms} ms`)), ms)),
  ]);
}

describe("tenantry client with an external identity provider's token, live", { skip }, () => {
  let provider: OidcProvider;
  let server: Served;
  let issuer = "";

  /** A valid token and an expired one (beyond the 30 s leeway) for a new verified user. */
  async function userTokens(): Promise<{ email: string; fresh: string; expired: string }> {
    const sub = `user_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
    const email = `${sub}@example.com`;
    const claims = { sub, email, email_verified: true };
    const expired = await issueToken(issuer, { ...claims, iat_offset: -600, exp_offset: -120 });
    return { email, fresh: await issueToken(issuer, claims), expired };
  }

  before(async () => {
    provider = started as OidcProvider;
    issuer = provider.issuers["alpha"] ?? "";
    // ENV=development (server.ts): an http:// issuer is allowed outside production.
    server = await serve({ AUTH_PROVIDERS: JSON.stringify([{ name: "alpha", issuer, audience: AUDIENCE }]) });
  });

  after(async () => {
    await server?.stop();
    await provider?.stop();
  });

  it("sends the provider's token: the user is created just in time, makes an organization and a project", async () => {
    const sub = `user_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
    const email = `${sub}@example.com`;
    const token = await issueToken(issuer, { sub, email, email_verified: true, given_name: "Ada" });
    const sent: Sent[] = [];
    const api = createTenantryClient({
      baseUrl: server.baseUrl,
      fetch: recordingFetch(sent),
      accessToken: async () => token,
    });
    const me = await unwrap(api.GET("/api/v1/users/me"));
    assert.equal(me.email, email);
    assert.equal(me.emailVerified, true);
    assert.equal(me.firstName, "Ada");
    const org = await unwrap(api.POST("/api/v1/orgs", { body: { name: "External Inc" } }));
    assert.equal(org.myRole, "owner");
    const project = await unwrap(
      api.POST("/api/v1/orgs/{orgId}/projects", { params: { path: { orgId: org.id } }, body: { name: "Launch" } }),
    );
    assert.equal(project.name, "Launch");
    assert.ok(sent.length >= 3);
    assert.ok(sent.every((r) => r.token === token && r.status < 400));
    assert.equal(api.tokens.get(), null); // the local token store is not used
  });

  it("two concurrent 401s (an expired token): ONE forced call, both retried with the new token", async () => {
    const { email, fresh, expired } = await userTokens();
    let refused!: () => void;
    const bothRefused = new Promise<void>((done) => (refused = done));
    const sent: Sent[] = [];
    const fetchLog = recordingFetch(sent, async (_, response) => {
      if (response.status === 401 && sent.filter((r) => r.status === 401).length === 2) refused();
    });
    let current = expired;
    const calls: boolean[] = [];
    const accessToken: AccessTokenProvider = async ({ forceRefresh }) => {
      calls.push(forceRefresh);
      if (forceRefresh) {
        await within(bothRefused, 10_000, "both 401s"); // the second 401 arrives while this runs
        current = fresh;
      }
      return current;
    };
    let ended = 0;
    const api = createTenantryClient({
      baseUrl: server.baseUrl,
      fetch: fetchLog,
      accessToken,
      onSessionEnded: () => (ended += 1),
    });
    const [me, orgs] = await Promise.all([
      unwrap(api.GET("/api/v1/users/me")),
      unwrap(api.GET("/api/v1/orgs")),
    ]);
    assert.equal(me.email, email);
    assert.ok(Array.isArray(orgs));
    assert.equal(calls.filter((force) => force).length, 1);
    assert.deepEqual(
      sent.map((r) => [r.token === fresh ? "fresh" : "expired", r.status, r.code]),
      [
        ["expired", 401, "token_expired"],
        ["expired", 401, "token_expired"],
        ["fresh", 200, null],
        ["fresh", 200, null],
      ],
    );
    assert.equal(ended, 0);
  });

  it("a request refused with a token already replaced retries with the newer one (no second forced call)", async () => {
    const { fresh, expired } = await userTokens();
    let release!: () => void;
    const retried = new Promise<void>((done) => (release = done));
    const sent: Sent[] = [];
    // The 401 of /orgs is held until /users/me has been refused, refreshed and retried.
    const fetchLog = recordingFetch(sent, async (request, response) => {
      const path = new URL(request.url).pathname;
      if (path === "/api/v1/users/me" && response.ok) release();
      if (path === "/api/v1/orgs" && response.status === 401) await within(retried, 10_000, "the retry");
    });
    let current = expired;
    let forced = 0;
    const api = createTenantryClient({
      baseUrl: server.baseUrl,
      fetch: fetchLog,
      accessToken: async ({ forceRefresh }) => {
        if (forceRefresh) {
          forced += 1;
          current = fresh;
        }
        return current;
      },
    });
    const [me, orgs] = await Promise.all([unwrap(api.GET("/api/v1/users/me")), unwrap(api.GET("/api/v1/orgs"))]);
    assert.ok(me.id);
    assert.ok(Array.isArray(orgs));
    assert.equal(forced, 1);
    const retries = sent.filter((r) => r.token === fresh);
    assert.deepEqual(retries.map((r) => [r.path, r.status]), [["/api/v1/users/me", 200], ["/api/v1/orgs", 200]]);
  });

  it("no token from the forced call: onSessionEnded, and the 401 is the answer", async () => {
    const { expired } = await userTokens();
    let ended = 0;
    const sent: Sent[] = [];
    const api = createTenantryClient({
      baseUrl: server.baseUrl,
      fetch: recordingFetch(sent),
      accessToken: async ({ forceRefresh }) => (forceRefresh ? null : expired),
      onSessionEnded: () => (ended += 1),
    });
    const refused = await unwrap(api.GET("/api/v1/users/me")).catch((error: unknown) => error);
    assert.ok(isApiError(refused, "token_expired"));
    assert.equal(refused.status, 401);
    assert.equal(ended, 1);
    assert.equal(sent.length, 1); // not retried without a token

    // Nobody signed in (null at once): sent without a token, no forced call, no session ended.
    const forcedCalls: boolean[] = [];
    const anonymous = createTenantryClient({
      baseUrl: server.baseUrl,
      fetch: recordingFetch(sent),
      accessToken: async ({ forceRefresh }) => {
        forcedCalls.push(forceRefresh);
        return null;
      },
      onSessionEnded: () => (ended += 1),
    });
    const unauthorized = await unwrap(anonymous.GET("/api/v1/users/me")).catch((error: unknown) => error);
    assert.ok(isApiError(unauthorized, "unauthorized"));
    assert.deepEqual(forcedCalls, [false]);
    assert.equal(sent.at(-1)?.token, null);
    assert.equal(ended, 1);
  });

  it("local-account methods: logout does nothing, login/register/refresh reject", async () => {
    const { fresh } = await userTokens();
    const sent: Sent[] = [];
    const api = createTenantryClient({ baseUrl: server.baseUrl, fetch: recordingFetch(sent), accessToken: async () => fresh });
    await api.logout();
    assert.equal(sent.length, 0);
    await assert.rejects(api.login({ email: "x@example.com", password: "a long passphrase" }), /local accounts/);
    await assert.rejects(api.register({ email: "x@example.com", password: "a long passphrase" }), /local accounts/);
    await assert.rejects(api.refresh(), /local accounts/);
    assert.equal(sent.length, 0);
    assert.ok((await unwrap(api.GET("/api/v1/users/me"))).id); // the provider's token still works
  });
});
