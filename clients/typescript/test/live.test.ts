/**
 * The client against a live `tenantry serve` (SQLite, started here): register →
 * organization → project → tasks → cursor walk → a 404 and a 409 narrowed by `code` →
 * two concurrent refreshes (one rotation) → logout.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import {
  ApiError,
  createTenantryClient,
  cursorItems,
  isApiError,
  memoryTokenStore,
  unwrap,
  type ErrorCode,
  type TenantryApi,
} from "../src/index.js";
import { serve, type Served } from "./server.js";

let server: Served;

/** A fetch that records what the client sent (method, path, headers). */
function recordingFetch(log: { method: string; path: string; headers: Headers }[]): typeof fetch {
  return async (input: RequestInfo | URL, init?: RequestInit) => {
    const request = input instanceof Request ? input : new Request(input, init);
    log.push({ method: request.method, path: new URL(request.url).pathname, headers: new Headers(request.headers) });
    return fetch(request);
  };
}

before(async () => {
  server = await serve();
});

after(async () => {
  await server?.stop();
});

describe("tenantry client, live", () => {
  const sent: { method: string; path: string; headers: Headers }[] = [];
  let api: TenantryApi;
  let orgId = "";
  let projectId = "";

  it("registers and keeps the tokens", async () => {
    api = createTenantryClient({ baseUrl: server.baseUrl, fetch: recordingFetch(sent) });
    const email = `client-${crypto.randomUUID()}@example.com`;
    const result = await api.register({ email, password: "a long client passphrase" });
    assert.equal(result.user.email, email);
    assert.equal(api.tokens.get()?.refreshToken, result.refreshToken);
    const me = await unwrap(api.GET("/api/v1/users/me"));
    assert.equal(me.email, email);
  });

  it("creates an organization and a project, with an Idempotency-Key on the create", async () => {
    const org = await unwrap(api.POST("/api/v1/orgs", { body: { name: "Client Inc" } }));
    orgId = org.id;
    assert.equal(org.myRole, "owner");
    const project = await unwrap(
      api.POST("/api/v1/orgs/{orgId}/projects", {
        params: { path: { orgId } },
        body: { name: "Launch" },
      }),
    );
    projectId = project.id;
    const create = sent.findLast((r) => r.method === "POST" && r.path.endsWith("/projects"));
    assert.match(create?.headers.get("idempotency-key") ?? "", /^[0-9a-f-]{36}$/);
  });

  it("replays a create sent twice with the same Idempotency-Key", async () => {
    const once = createTenantryClient({
      baseUrl: server.baseUrl,
      tokens: api.tokens,
      idempotencyKey: () => "client-test-key-1",
    });
    const send = () =>
      once.POST("/api/v1/orgs/{orgId}/projects", { params: { path: { orgId } }, body: { name: "Once" } });
    const first = await unwrap(send());
    const again = await send();
    assert.equal(again.response.headers.get("idempotent-replayed"), "true");
    assert.equal(again.data?.data.id, first.id);
  });

  it("walks every task with the cursor iterator", async () => {
    const titles = Array.from({ length: 7 }, (_, i) => `Task ${i}`);
    for (const title of titles) {
      await unwrap(
        api.POST("/api/v1/orgs/{orgId}/projects/{projectId}/tasks", {
          params: { path: { orgId, projectId } },
          body: { title, priority: "high" },
        }),
      );
    }
    let pages = 0;
    const seen: string[] = [];
    for await (const task of cursorItems((cursor) => {
      pages += 1;
      return api.GET("/api/v1/orgs/{orgId}/projects/{projectId}/tasks", {
        params: { path: { orgId, projectId }, query: { cursor, limit: 3, sortBy: "title", sortOrder: "asc" } },
      });
    })) {
      seen.push(task.title);
    }
    assert.deepEqual(seen, titles);
    assert.equal(pages, 3);
  });

  it("streams the organization's events, and gives EventSource a single-use ticket URL", async () => {
    const controller = new AbortController();
    const events = api.streamEvents(orgId, { signal: controller.signal });
    const first = events.next(); // sends the request; resolves with the first event
    await new Promise((resolve) => setTimeout(resolve, 500)); // the subscription is live
    const project = await unwrap(
      api.POST("/api/v1/orgs/{orgId}/projects", {
        params: { path: { orgId } },
        body: { name: "Streamed" },
      }),
    );
    const received = await first;
    assert.equal(received.value?.event, "project.created");
    assert.equal(received.value?.data.entityId, project.id);
    controller.abort();
    await events.return(undefined);
    const url = await api.eventSourceUrl(orgId, { lastEventId: received.value?.id ?? undefined });
    assert.match(url, /[?&]ticket=/);
    const opened = await fetch(url, { headers: { Accept: "text/event-stream" } }); // no token
    assert.equal(opened.status, 200);
    assert.match(opened.headers.get("content-type") ?? "", /^text\/event-stream/);
    await opened.body?.cancel();
    const reused = await fetch(url);
    assert.equal(reused.status, 401);
    await reused.body?.cancel();
  });

  it("narrows a 404 by its code", async () => {
    try {
      await unwrap(
        api.GET("/api/v1/orgs/{orgId}/projects/{projectId}", {
          params: { path: { orgId, projectId: crypto.randomUUID() } },
        }),
      );
      assert.fail("expected a 404");
    } catch (error) {
      assert.ok(isApiError(error, "not_found"));
      const code: "not_found" = error.code; // the type narrowed to the one code
      assert.equal(code, "not_found");
      assert.equal(error.status, 404);
      assert.ok(error.requestId);
    }
  });

  it("narrows a 409 by its code (a stale version)", async () => {
    const task = await unwrap(
      api.POST("/api/v1/orgs/{orgId}/projects/{projectId}/tasks", {
        params: { path: { orgId, projectId } },
        body: { title: "Versioned" },
      }),
    );
    const path = { orgId, projectId, taskId: task.id };
    await unwrap(
      api.PATCH("/api/v1/orgs/{orgId}/projects/{projectId}/tasks/{taskId}", {
        params: { path },
        body: { title: "Changed", version: task.version },
      }),
    );
    const stale = await unwrap(
      api.PATCH("/api/v1/orgs/{orgId}/projects/{projectId}/tasks/{taskId}", {
        params: { path },
        body: { title: "Lost update", version: task.version },
      }),
    ).catch((error: unknown) => error);
    assert.ok(stale instanceof ApiError);
    assert.ok(isApiError(stale, "conflict", "version_conflict"));
    const code: "conflict" | "version_conflict" = stale.code;
    assert.equal(code, "version_conflict");
    assert.equal(stale.status, 409);
    const codes: ErrorCode[] = ["not_found", "version_conflict"]; // the union from the document
    assert.ok(codes.includes(stale.code));
  });

  it("refreshes once for two concurrent 401s, and rotates the refresh token", async () => {
    const before = api.tokens.get();
    assert.ok(before);
    api.tokens.set({ ...before, accessToken: "expired.or.revoked" });
    const refreshesBefore = sent.filter((r) => r.path === "/api/v1/auth/refresh").length;
    const [me, orgs] = await Promise.all([
      unwrap(api.GET("/api/v1/users/me")),
      unwrap(api.GET("/api/v1/orgs/{orgId}/projects", { params: { path: { orgId } } })),
    ]);
    assert.ok(me.id);
    assert.ok(Array.isArray(orgs));
    const refreshes = sent.filter((r) => r.path === "/api/v1/auth/refresh").length - refreshesBefore;
    assert.equal(refreshes, 1);
    const after = api.tokens.get();
    assert.ok(after);
    assert.notEqual(after.refreshToken, before.refreshToken);
    assert.notEqual(after.accessToken, "expired.or.revoked");

    const [a, b] = await Promise.all([api.refresh(), api.refresh()]);
    assert.equal(a.refreshToken, b.refreshToken); // one refresh served both callers
    assert.notEqual(a.refreshToken, after.refreshToken);
  });

  it("logs out: the tokens are gone and the refresh token no longer works", async () => {
    const last = api.tokens.get();
    assert.ok(last);
    await api.logout();
    assert.equal(api.tokens.get(), null);
    const anonymous = createTenantryClient({ baseUrl: server.baseUrl, tokens: memoryTokenStore() });
    const refused = await unwrap(
      anonymous.POST("/api/v1/auth/refresh", { body: { refreshToken: last.refreshToken } }),
    ).catch((error: unknown) => error);
    assert.ok(isApiError(refused, "unauthorized"));
    assert.equal(refused.status, 401);
  });
});
