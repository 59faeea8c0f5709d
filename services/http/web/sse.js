// Server-Sent Events over fetch. EventSource cannot send an Authorization header, and a token in
// a URL ends up in logs and proxies, so streams are read with fetch and a body reader instead.
// The stream reconnects by itself with backoff, resuming with Last-Event-ID so the server replays
// exactly what was missed, and reports its state so the page can show it.

const STALL_MS = 40_000; // the server sends a keep-alive comment every 15 s
const MAX_BACKOFF_MS = 10_000;

/**
 * Opens a stream. Options: `url`, `headers()` (called on every connection), `onEvent({type, id,
 * data})`, `onState(state, detail)` with state one of "connecting", "live", "reconnecting",
 * "stopped"; `lastEventId` to resume from. A 401, 403 or 404 stops the stream (detail is the
 * status); anything else is retried. Returns `{ close(), get lastEventId() }`.
 */
export function openStream({ url, headers, onEvent, onState, lastEventId = null }) {
  let closed = false;
  let controller = null;
  let attempt = 0;
  let last = lastEventId;
  let wake = null;

  const retryNow = () => wake?.();
  window.addEventListener("online", retryNow);

  async function connectOnce() {
    controller = new AbortController();
    const sent = { accept: "text/event-stream", ...headers() };
    if (last !== null) sent["last-event-id"] = String(last);
    const response = await fetch(url, { headers: sent, signal: controller.signal, cache: "no-store" });
    if (!response.ok) {
      const error = new Error(`stream answered ${response.status}`);
      error.status = response.status;
      throw error;
    }
    attempt = 0;
    onState("live");
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let event = { type: "message", data: [], id: null };
    let stall = setTimeout(() => controller.abort(), STALL_MS);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        clearTimeout(stall);
        stall = setTimeout(() => controller.abort(), STALL_MS);
        buffer += decoder.decode(value, { stream: true });
        const lines = buffer.split(/\r\n|\r|\n/);
        buffer = lines.pop();
        for (const line of lines) {
          if (line === "") {
            if (event.id !== null) last = event.id;
            if (event.data.length > 0) {
              onEvent({ type: event.type, id: event.id, data: event.data.join("\n") });
            }
            event = { type: "message", data: [], id: null };
            continue;
          }
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? "" : line.slice(colon + 1);
          if (value.startsWith(" ")) value = value.slice(1);
          if (field === "event") event.type = value;
          else if (field === "data") event.data.push(value);
          else if (field === "id") event.id = value;
        }
      }
    } finally {
      clearTimeout(stall);
    }
  }

  (async () => {
    while (!closed) {
      onState(attempt === 0 ? "connecting" : "reconnecting");
      try {
        await connectOnce();
      } catch (error) {
        if (closed) break;
        if ([401, 403, 404].includes(error.status)) {
          closed = true;
          onState("stopped", error.status);
          break;
        }
      }
      if (closed) break;
      attempt += 1;
      const backoff = Math.min(MAX_BACKOFF_MS, 250 * 2 ** Math.min(attempt, 6));
      const wait = backoff / 2 + Math.random() * (backoff / 2);
      onState("reconnecting", Math.round(wait));
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, wait);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      wake = null;
    }
    window.removeEventListener("online", retryNow);
  })();

  return {
    close() {
      closed = true;
      controller?.abort();
      wake?.();
      window.removeEventListener("online", retryNow);
    },
    /** Drops the connection now; the stream reconnects and resumes (for tests and "retry"). */
    reconnect() {
      controller?.abort();
      wake?.();
    },
    get lastEventId() {
      return last;
    },
  };
}
