// The JSON API as the pages call it: one fetch wrapper that sends the bearer token as a header
// (never in a URL), turns every error into an ApiError with the API's stable code, and makes
// idempotency keys for writes that must not happen twice.

/** An error answered by the API (or a network failure, with status 0 and code "network"). */
export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }

  /** Worth retrying with the same idempotency key: the request may not have been served. */
  get transient() {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }
}

/**
 * Calls the API. `token` is sent as `Authorization: Bearer`; `body` as JSON; `headers` are added.
 * Resolves with the parsed JSON (or null for 204), rejects with an ApiError.
 */
export async function api(path, { method = "GET", token, body, headers = {}, signal } = {}) {
  const sent = { ...headers };
  if (token) sent.authorization = `Bearer ${token}`;
  if (body !== undefined) sent["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: sent,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network", "the server could not be reached");
  }
  if (response.status === 204) return null;
  let json = null;
  try {
    json = await response.json();
  } catch {
    // A proxy's HTML error page, say: fall through with no body.
  }
  if (!response.ok) {
    throw new ApiError(
      response.status,
      json?.code ?? "http_" + response.status,
      json?.message ?? response.statusText ?? "request failed",
      json?.field,
    );
  }
  return json;
}

/** A random idempotency key (works outside secure contexts too, unlike randomUUID). */
export function newKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Resolves after `ms` milliseconds (for backoff between retries, never for synchronisation). */
export function delay(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
