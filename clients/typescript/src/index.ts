/**
 * The tenantry client: the generated types (`schema.ts`, from /openapi.json by
 * openapi-typescript) driven by openapi-fetch, plus what generation cannot do:
 *
 * - token refresh with rotation, single-flight: concurrent 401s trigger ONE refresh,
 *   every caller waits for it and retries once with the new access token;
 * - or an external identity provider's token (Clerk, Supabase, Auth0, Keycloak) through the
 *   `accessToken` callback, asked again with `forceRefresh: true` (single-flight) on a 401;
 * - the envelope unwrapped: `unwrap()` returns `data`, or throws an `ApiError` whose
 *   `code` is the `ErrorCode` union of the document (narrow with `isApiError(e, "conflict")`);
 * - cursor pages as an async iterator (`cursorItems`);
 * - an `Idempotency-Key` on every create (POST under /orgs), kept across the retry.
 */
import createClient, { type Client } from "openapi-fetch";

import type { components, paths } from "./schema.js";

export type { components, operations, paths } from "./schema.js";
export type Schemas = components["schemas"];
export type ErrorCode = Schemas["ErrorCode"];
export type ErrorEnvelope = Schemas["ErrorEnvelope"];
export type AuthResult = Schemas["AuthResult"];

/** The pair a sign-in or a refresh returns; the refresh token rotates on every refresh. */
export interface Tokens {
  accessToken: string;
  refreshToken: string;
}

/** Where the client keeps its tokens (memory by default; a browser app may persist them). */
export interface TokenStore {
  get(): Tokens | null;
  set(tokens: Tokens | null): void;
}

export function memoryTokenStore(initial: Tokens | null = null): TokenStore {
  let tokens = initial;
  return {
    get: () => tokens,
    set: (next) => {
      tokens = next;
    },
  };
}

/** An error answer of the API: the error envelope, with `code` typed as the union. */
export class ApiError<C extends ErrorCode = ErrorCode> extends Error {
  readonly status: number;
  readonly code: C;
  readonly details: ErrorEnvelope["details"];
  readonly requestId: string | null;
  readonly envelope: ErrorEnvelope;

  constructor(status: number, envelope: ErrorEnvelope) {
    super(envelope.message);
    this.name = "ApiError";
    this.status = status;
    this.code = envelope.code as C;
    this.details = envelope.details;
    this.requestId = envelope.requestId ?? null;
    this.envelope = envelope;
  }
}

/** `true` when `error` is an ApiError (with one of `codes`, when given): narrows `code`. */
export function isApiError<C extends ErrorCode>(
  error: unknown,
  ...codes: C[]
): error is ApiError<C> {
  return (
    error instanceof ApiError && (codes.length === 0 || (codes as ErrorCode[]).includes(error.code))
  );
}

function isEnvelope(body: unknown): body is ErrorEnvelope {
  return (
    typeof body === "object" &&
    body !== null &&
    (body as { success?: unknown }).success === false &&
    typeof (body as { code?: unknown }).code === "string"
  );
}

type Enveloped<D> = D extends { data: infer T } ? T : D;

/** The `data` of a success envelope, or the `ApiError` of an error envelope (thrown). */
export async function unwrap<D>(
  result: Promise<{ data?: D; error?: unknown; response: Response }>,
): Promise<Enveloped<D>> {
  const { data, error, response } = await result;
  if (!response.ok) {
    if (isEnvelope(error)) throw new ApiError(response.status, error);
    throw new ApiError(response.status, {
      success: false,
      statusCode: response.status,
      error: response.statusText,
      code: "internal_error",
      message: `HTTP ${response.status} without an error envelope`,
      details: [],
      path: new URL(response.url || "http://invalid/").pathname,
      requestId: response.headers.get("x-request-id"),
      timestamp: new Date().toISOString(),
    });
  }
  if (data !== undefined && typeof data === "object" && data !== null && "data" in data) {
    return (data as { data: unknown }).data as Enveloped<D>;
  }
  return data as Enveloped<D>;
}

/** A page of either shape, as far as iteration needs it. */
interface AnyPage<T> {
  data: T[];
  meta: { nextCursor?: string | null; hasNextPage: boolean };
}

/**
 * Every item of a keyset-paginated list, page after page, as an async iterator.
 *
 *   for await (const task of cursorItems((cursor) =>
 *     api.GET("/api/v1/orgs/{orgId}/tasks", { params: { path: { orgId }, query: { cursor } } }),
 *   )) { ... }
 *
 * `fetchPage` is called with `""` (the first keyset page), then each `meta.nextCursor`.
 */
export async function* cursorItems<T>(
  fetchPage: (cursor: string) => Promise<{ data?: AnyPage<T>; error?: unknown; response: Response }>,
): AsyncGenerator<T, void, undefined> {
  let cursor = "";
  for (;;) {
    const { data, error, response } = await fetchPage(cursor);
    if (!response.ok || data === undefined) {
      await unwrap(Promise.resolve({ data, error, response }));
      return;
    }
    yield* data.data;
    const next = data.meta.nextCursor;
    if (!data.meta.hasNextPage || !next) return;
    cursor = next;
  }
}

/**
 * An external identity provider's access token (docs/auth.md, "From the TypeScript client"):
 * `forceRefresh: false` may answer from the provider's cache, `true` must get a new one.
 * `null`: nobody is signed in.
 *
 *   accessToken: async ({ forceRefresh }) =>
 *     (await clerk.session?.getToken({ template: "tenantry", skipCache: forceRefresh })) ?? null
 *
 * A callback that throws makes the call reject with its error (on the forced call after a
 * 401: the 401 is returned).
 */
export type AccessTokenProvider = (options: { forceRefresh: boolean }) => Promise<string | null>;

export interface ClientOptions {
  /** The API origin, e.g. `https://api.example.com` (paths start with /api/v1). */
  baseUrl: string;
  /** The local account's tokens (ignored when `accessToken` is given). */
  tokens?: TokenStore;
  /**
   * Authenticate with an external identity provider's token instead of a local account:
   * called before every authenticated call (`forceRefresh: false`; the provider caches), and
   * on a 401 once with `forceRefresh: true` (concurrent 401s share that one call), then the
   * call is retried once. `register`, `login` and `refresh` then reject (local accounts
   * only) and `logout` does nothing: sign out with the provider.
   */
  accessToken?: AccessTokenProvider;
  /** A fetch to use instead of the global one (tests, instrumentation). */
  fetch?: typeof globalThis.fetch;
  /**
   * Called when the session is over (send the user to sign in): a refresh failed, or, with
   * `accessToken`, the forced call after a 401 gave no token.
   */
  onSessionEnded?: () => void;
  /** The Idempotency-Key of a create (default: `crypto.randomUUID()`). */
  idempotencyKey?: () => string;
}

export type TenantryApi = Client<paths> & {
  readonly tokens: TokenStore;
  /** Register, keep the tokens, return the result (user, tokens). Local accounts only. */
  register(body: Schemas["RegisterRequest"]): Promise<AuthResult>;
  /** Sign in, keep the tokens. Local accounts only. */
  login(body: Schemas["LoginRequest"]): Promise<AuthResult>;
  /**
   * Rotate the tokens now (single-flight: callers at the same time share one refresh).
   * Local accounts only (with `accessToken`, the provider refreshes its own tokens).
   */
  refresh(): Promise<Tokens>;
  /**
   * End this session (idempotent) and forget the tokens. With `accessToken`: does nothing
   * (no server-side session to end; sign out with the provider, e.g. `clerk.signOut()`).
   */
  logout(): Promise<void>;
  /**
   * The organization's events (Server-Sent Events, docs/events.md), read with fetch (the
   * access token in the header): yields each event until `signal` aborts or the server
   * ends the stream. Resume with the last event's `id` as `lastEventId`.
   */
  streamEvents(orgId: string, options?: { lastEventId?: string; signal?: AbortSignal }): AsyncGenerator<OrgEvent>;
  /** A URL for the browser's `EventSource`, with a single-use ticket (valid 60 s). */
  eventSourceUrl(orgId: string, options?: { lastEventId?: string }): Promise<string>;
};

/** One event of the stream: `event` is `<entityType>.<action>`, `job.<state>` or `reset`. */
export interface OrgEvent {
  id: string | null;
  event: string;
  data: Record<string, unknown>;
}

/** Parse a Server-Sent Events body into its events (comments and `retry:` skipped). */
export async function* parseEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<OrgEvent> {
  const decoder = new TextDecoder();
  const reader = body.getReader();
  let buffer = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let id: string | null = null;
        let event: string | null = null;
        const data: string[] = [];
        for (const line of block.split("\n")) {
          const colon = line.indexOf(":");
          if (colon === 0) continue;
          const name = colon < 0 ? line : line.slice(0, colon);
          const raw = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (name === "id") id = raw;
          else if (name === "event") event = raw;
          else if (name === "data") data.push(raw);
        }
        if (event !== null) {
          yield { id, event, data: data.length ? (JSON.parse(data.join("\n")) as Record<string, unknown>) : {} };
        }
      }
    }
  } finally {
    reader.releaseLock();
  }
}

const AUTH_PATHS = /\/api\/v1\/auth\/(login|register|refresh|logout|password\/forgot|password\/reset|email\/verify)$/;
const CREATE_PATH = /\/api\/v1\/orgs\/[^/]+\/.+/;

/** The client: `api.GET/POST/...` typed from the document, tokens handled. */
export function createTenantryClient(options: ClientOptions): TenantryApi {
  const tokens = options.tokens ?? memoryTokenStore();
  const baseFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  const newKey = options.idempotencyKey ?? (() => crypto.randomUUID());
  let refreshing: Promise<Tokens> | null = null;
  const provider = options.accessToken;
  /** The provider's newest token this client has seen (to tell a token already replaced). */
  let providerLatest: string | null = null;
  let providerRefreshing: Promise<string | null> | null = null;

  async function providerToken(forceRefresh: boolean): Promise<string | null> {
    if (provider === undefined) return null;
    const token = await provider({ forceRefresh });
    if (token !== null) providerLatest = token;
    return token;
  }

  /** One forced call at a time; no token back ends the session (once, for every caller). */
  function providerRefresh(): Promise<string | null> {
    providerRefreshing ??= providerToken(true)
      .then((token) => {
        if (token === null) {
          providerLatest = null;
          options.onSessionEnded?.();
        }
        return token;
      })
      .finally(() => {
        providerRefreshing = null;
      });
    return providerRefreshing;
  }

  /** An authenticated call with the provider's token: on a 401, a forced token and one retry. */
  async function sendWithProvider(request: Request): Promise<Response> {
    const sent = await providerToken(false);
    if (sent === null) return baseFetch(request); // nobody signed in: the API decides
    const retry = request.clone();
    request.headers.set("Authorization", `Bearer ${sent}`);
    const response = await baseFetch(request);
    if (response.status !== 401) return response;
    // Refused (expired, revoked keys): a token newer than the one sent is used as it is;
    // otherwise ask the provider for a new one, once for all concurrent callers.
    let fresh: string | null;
    if (providerLatest !== null && providerLatest !== sent && providerRefreshing === null) {
      fresh = providerLatest;
    } else {
      try {
        fresh = await providerRefresh();
      } catch {
        return response;
      }
    }
    if (fresh === null) return response;
    await response.body?.cancel();
    retry.headers.set("Authorization", `Bearer ${fresh}`);
    return baseFetch(retry);
  }

  async function doRefresh(): Promise<Tokens> {
    const current = tokens.get();
    if (current === null) throw new ApiError(401, localError("No session to refresh"));
    const response = await baseFetch(`${options.baseUrl}/api/v1/auth/refresh`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refreshToken: current.refreshToken }),
    });
    const body: unknown = await response.json().catch(() => null);
    if (!response.ok) {
      tokens.set(null);
      options.onSessionEnded?.();
      throw new ApiError(response.status, isEnvelope(body) ? body : localError("Refresh failed"));
    }
    const result = (body as { data: AuthResult }).data;
    const next = { accessToken: result.accessToken, refreshToken: result.refreshToken };
    tokens.set(next);
    return next;
  }

  /** One refresh at a time: whoever asks while one runs gets its result. */
  function refresh(): Promise<Tokens> {
    refreshing ??= doRefresh().finally(() => {
      refreshing = null;
    });
    return refreshing;
  }

  async function send(request: Request): Promise<Response> {
    const url = new URL(request.url);
    const isAuthCall = AUTH_PATHS.test(url.pathname);
    if (request.method === "POST" && CREATE_PATH.test(url.pathname) && !request.headers.has("Idempotency-Key")) {
      request.headers.set("Idempotency-Key", newKey());
    }
    if (provider !== undefined) {
      // An Authorization the caller set is sent as it is.
      return isAuthCall || request.headers.has("Authorization") ? baseFetch(request) : sendWithProvider(request);
    }
    const sent = tokens.get();
    const retry = isAuthCall || sent === null ? null : request.clone();
    if (sent !== null && !isAuthCall && !request.headers.has("Authorization")) {
      request.headers.set("Authorization", `Bearer ${sent.accessToken}`);
    }
    const response = await baseFetch(request);
    if (response.status !== 401 || retry === null || sent === null) return response;
    // The access token expired or was refused: rotate (once for all concurrent callers,
    // and not again if another caller already did since this request was sent), retry once.
    const latest = tokens.get();
    let fresh: Tokens;
    if (latest !== null && latest.accessToken !== sent.accessToken) {
      fresh = latest;
    } else {
      try {
        fresh = await refresh();
      } catch {
        return response;
      }
    }
    retry.headers.set("Authorization", `Bearer ${fresh.accessToken}`);
    return baseFetch(retry);
  }

  const client = createClient<paths>({ baseUrl: options.baseUrl, fetch: send });

  async function keep(result: Promise<AuthResult>): Promise<AuthResult> {
    const auth = await result;
    tokens.set({ accessToken: auth.accessToken, refreshToken: auth.refreshToken });
    return auth;
  }

  function localOnly(what: string): Promise<never> {
    return Promise.reject(
      new Error(`${what} is for local accounts: this client authenticates with the provider's accessToken`),
    );
  }

  return Object.assign(client, {
    tokens,
    register: (body: Schemas["RegisterRequest"]) =>
      provider !== undefined
        ? localOnly("register")
        : keep(unwrap(client.POST("/api/v1/auth/register", { body }))),
    login: (body: Schemas["LoginRequest"]) =>
      provider !== undefined ? localOnly("login") : keep(unwrap(client.POST("/api/v1/auth/login", { body }))),
    refresh: (): Promise<Tokens> => (provider !== undefined ? localOnly("refresh") : refresh()),
    async logout(): Promise<void> {
      if (provider !== undefined) return; // sign out with the provider
      const current = tokens.get();
      tokens.set(null);
      if (current === null) return;
      await unwrap(client.POST("/api/v1/auth/logout", { body: { refreshToken: current.refreshToken } }));
    },
    async *streamEvents(
      orgId: string,
      streamOptions: { lastEventId?: string; signal?: AbortSignal } = {},
    ): AsyncGenerator<OrgEvent> {
      const headers = new Headers({ Accept: "text/event-stream" });
      if (streamOptions.lastEventId) headers.set("Last-Event-ID", streamOptions.lastEventId);
      const request = new Request(`${options.baseUrl}/api/v1/orgs/${encodeURIComponent(orgId)}/events`, {
        headers,
        signal: streamOptions.signal,
      });
      const response = await send(request);
      if (!response.ok || response.body === null) {
        const body: unknown = await response.json().catch(() => null);
        throw new ApiError(response.status, isEnvelope(body) ? body : localError("The stream was refused"));
      }
      try {
        yield* parseEvents(response.body);
      } catch (error) {
        if (streamOptions.signal?.aborted) return;
        throw error;
      }
    },
    async eventSourceUrl(orgId: string, urlOptions: { lastEventId?: string } = {}): Promise<string> {
      const ticket = await unwrap(
        client.POST("/api/v1/orgs/{orgId}/events/tickets", { params: { path: { orgId } } }),
      );
      const url = new URL(`${options.baseUrl}/api/v1/orgs/${encodeURIComponent(orgId)}/events`);
      url.searchParams.set("ticket", ticket.ticket);
      if (urlOptions.lastEventId) url.searchParams.set("lastEventId", urlOptions.lastEventId);
      return url.toString();
    },
  });
}

function localError(message: string): ErrorEnvelope {
  return {
    success: false,
    statusCode: 401,
    error: "Unauthorized",
    code: "unauthorized",
    message,
    details: [],
    path: "",
    requestId: null,
    timestamp: new Date().toISOString(),
  };
}
