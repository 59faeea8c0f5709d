// The chat client: log in or register, pick or create a room, read its history (older pages load
// as you scroll up), follow it live over its event stream, and post, edit, delete and report
// messages. All state is in memory except the session, which is kept in localStorage so a reload
// keeps you logged in. Every user string reaches the page as text (dom.js), never as markup.

import { api, ApiError, delay, newKey } from "./api.js";
import { openStream } from "./sse.js";
import { h, hue, replace, shortTime } from "./dom.js";

const SESSION_KEY = "switchboard.session";
const PAGE = 50;
const SEND_ATTEMPTS = 4;
const ROOMS_EVERY_MS = 5000;

const $ = (id) => document.getElementById(id);

const state = {
  session: null, // { token, user: { id, username } }
  rooms: [],
  room: null, // the open room
  messages: new Map(), // id -> { message, element }
  before: null, // `before` cursor of the next older page; null at the room's start
  loadingOlder: false,
  stream: null,
  sending: false,
  pending: null, // { text, key }: the post being sent or retried, keyed so it never posts twice
  reporting: null, // the message being reported
  roomTimer: null,
};

// ---------------------------------------------------------------------------------------------
// Session

function loadSession() {
  try {
    const stored = JSON.parse(localStorage.getItem(SESSION_KEY));
    return stored?.token && stored?.user ? stored : null;
  } catch {
    return null;
  }
}

function saveSession(session) {
  state.session = session;
  if (session) localStorage.setItem(SESSION_KEY, JSON.stringify(session));
  else localStorage.removeItem(SESSION_KEY);
}

const authed = (path, options = {}) => api(path, { ...options, token: state.session?.token });

/** Runs an API call; a 401 means the session is gone, so it goes back to the login form. */
async function call(path, options) {
  try {
    return await authed(path, options);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      saveSession(null);
      showAuth("Your session ended. Log in again.");
    }
    throw error;
  }
}

function showAuth(message = "") {
  clearInterval(state.roomTimer);
  closeRoom();
  $("chat").hidden = true;
  $("auth").hidden = false;
  $("auth-error").textContent = message;
  $("auth-username").focus();
}

async function showChat() {
  $("auth").hidden = true;
  $("chat").hidden = false;
  $("whoami").textContent = state.session.user.username;
  document.body.classList.remove("in-room");
  await refreshRooms();
  // Rooms others create appear without a reload.
  clearInterval(state.roomTimer);
  state.roomTimer = setInterval(() => {
    if (state.session && !document.hidden) refreshRooms();
  }, ROOMS_EVERY_MS);
  const wanted = Number(new URLSearchParams(location.hash.slice(1)).get("room"));
  const room = state.rooms.find((r) => r.id === wanted);
  if (room) await openRoom(room.id);
}

async function submitAuth(event) {
  event.preventDefault();
  const action = event.submitter?.value ?? "login";
  const username = $("auth-username").value.trim();
  const password = $("auth-password").value;
  const error = $("auth-error");
  error.textContent = "";
  const buttons = [$("login-button"), $("register-button")];
  buttons.forEach((b) => (b.disabled = true));
  try {
    const session = await api(`/v1/auth/${action}`, { method: "POST", body: { username, password } });
    saveSession({ token: session.token, user: session.user });
    $("auth-password").value = "";
    await showChat();
  } catch (failure) {
    error.textContent = failure.message;
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
}

async function logout() {
  try {
    await authed("/v1/auth/logout", { method: "POST" });
  } catch {
    // Logged out here whatever the server said; the token expires on its own.
  }
  saveSession(null);
  history.replaceState(null, "", location.pathname);
  showAuth();
}

// ---------------------------------------------------------------------------------------------
// Rooms

async function refreshRooms() {
  try {
    const list = await call("/v1/rooms");
    state.rooms = list.rooms;
    renderRooms();
  } catch (error) {
    $("sidebar-error").textContent = error.message;
  }
}

function renderRooms() {
  const items = state.rooms.map((room) =>
    h(
      "li",
      {},
      h(
        "button",
        {
          type: "button",
          class: "room-link",
          "aria-current": state.room?.id === room.id ? "page" : null,
          dataset: { roomId: room.id },
          onclick: () => openRoom(room.id),
        },
        h("span", { class: "room-hash", "aria-hidden": "true" }, "#"),
        h("span", { class: "room-link-name" }, room.name),
        room.joined ? null : h("span", { class: "badge" }, "join"),
        h("span", { class: "room-count", title: "members" }, String(room.member_count)),
      ),
    ),
  );
  replace($("room-list"), items.length ? items : h("li", { class: "muted small" }, "No rooms yet: create one below."));
}

async function createRoom(event) {
  event.preventDefault();
  const input = $("new-room-name");
  const name = input.value.trim();
  if (!name) return;
  $("sidebar-error").textContent = "";
  $("new-room-button").disabled = true;
  try {
    const room = await call("/v1/rooms", {
      method: "POST",
      body: { name },
      headers: { "idempotency-key": newKey() },
    });
    input.value = "";
    await refreshRooms();
    await openRoom(room.id);
  } catch (error) {
    $("sidebar-error").textContent = error.message;
  } finally {
    $("new-room-button").disabled = false;
  }
}

function closeRoom() {
  state.stream?.close();
  state.stream = null;
  state.room = null;
  state.messages.clear();
  state.before = null;
  state.pending = null;
  replace($("message-list"));
  setConnection("idle");
}

async function openRoom(roomId) {
  closeRoom();
  let room;
  try {
    room = await call(`/v1/rooms/${roomId}`);
  } catch (error) {
    $("sidebar-error").textContent = error.message;
    return;
  }
  state.room = room;
  history.replaceState(null, "", `#room=${room.id}`);
  document.body.classList.add("in-room");
  renderRooms();
  renderRoomHeader();
  if (!room.joined) {
    $("history-state").textContent = "";
    $("older-button").hidden = true;
    $("empty-room").hidden = true;
    return;
  }
  await follow(room);
  $("composer-input").focus();
}

function renderRoomHeader() {
  const room = state.room;
  $("room-name").textContent = room ? `#${room.name}` : "Pick a room";
  $("room-topic").textContent = room
    ? [room.topic, `${room.member_count} member${room.member_count === 1 ? "" : "s"}`].filter(Boolean).join(" · ")
    : "";
  const joined = Boolean(room?.joined);
  $("join-bar").hidden = !room || joined;
  $("composer").hidden = !joined;
  $("leave-button").hidden = !joined;
}

async function joinRoom() {
  if (!state.room) return;
  try {
    await call(`/v1/rooms/${state.room.id}/join`, { method: "POST" });
    await refreshRooms();
    await openRoom(state.room.id);
  } catch (error) {
    $("sidebar-error").textContent = error.message;
  }
}

async function leaveRoom() {
  if (!state.room) return;
  const id = state.room.id;
  try {
    await call(`/v1/rooms/${id}/leave`, { method: "POST" });
    await refreshRooms();
    await openRoom(id);
  } catch (error) {
    $("sidebar-error").textContent = error.message;
  }
}

// ---------------------------------------------------------------------------------------------
// History and the live stream

/**
 * Opens the room's stream, then reads the latest page. The server subscribes a stream to live
 * events before it answers, so once the stream is up nothing committed later can be missed by
 * both; what both bring is merged by message id.
 */
async function follow(room) {
  let connected;
  const up = new Promise((resolve) => (connected = resolve));
  state.stream = openStream({
    url: `/v1/rooms/${room.id}/events`,
    headers: () => ({ authorization: `Bearer ${state.session.token}` }),
    onEvent: (event) => onRoomEvent(room, event),
    onState: (connection, detail) => {
      if (state.room?.id !== room.id) return;
      setConnection(connection, detail);
      if (connection === "live" || connection === "stopped") connected();
      if (connection === "stopped" && detail === 401) {
        saveSession(null);
        showAuth("Your session ended. Log in again.");
      }
    },
  });
  await Promise.race([up, delay(3000)]);
  if (state.room?.id !== room.id) return;
  await loadLatest(room);
}

async function loadLatest(room) {
  $("history-state").textContent = "Loading…";
  try {
    const page = await call(`/v1/rooms/${room.id}/messages?limit=${PAGE}`);
    if (state.room?.id !== room.id) return;
    for (const message of page.messages) upsert(message, "history");
    state.before = page.prev_before ?? null;
    renderHistoryState();
    scrollToBottom();
  } catch (error) {
    $("history-state").textContent = error.message;
  }
}

async function loadOlder() {
  const room = state.room;
  if (!room || state.before === null || state.loadingOlder) return;
  state.loadingOlder = true;
  $("history-state").textContent = "Loading older messages…";
  const box = $("messages");
  const fromBottom = box.scrollHeight - box.scrollTop;
  try {
    const page = await call(`/v1/rooms/${room.id}/messages?limit=${PAGE}&before=${state.before}`);
    if (state.room?.id !== room.id) return;
    for (const message of page.messages) upsert(message, "history");
    state.before = page.prev_before ?? null;
    // Keep what the reader was looking at in place while the page grows above it.
    box.scrollTop = box.scrollHeight - fromBottom;
  } catch (error) {
    $("history-state").textContent = error.message;
  } finally {
    state.loadingOlder = false;
    renderHistoryState();
  }
}

function renderHistoryState() {
  const start = state.before === null;
  $("older-button").hidden = start;
  $("history-state").textContent = start && state.messages.size > 0 ? "The beginning of the room." : "";
  $("empty-room").hidden = state.messages.size > 0;
}

function onRoomEvent(room, event) {
  if (state.room?.id !== room.id) return;
  let data;
  try {
    data = JSON.parse(event.data);
  } catch {
    return;
  }
  switch (event.type) {
    case "message":
    case "message_edited":
    case "message_deleted":
      upsert(data, event.type);
      break;
    case "member_joined":
    case "member_left":
      notice(`${data.user?.username ?? "someone"} ${event.type === "member_joined" ? "joined" : "left"}`);
      refreshMemberCount(room);
      if (event.type === "member_left" && data.user?.id === state.session.user.id) {
        openRoom(room.id);
      }
      break;
    case "reset":
      // The server can no longer replay what was missed: start over from the latest page.
      state.messages.clear();
      replace($("message-list"));
      loadLatest(room);
      break;
  }
}

async function refreshMemberCount(room) {
  try {
    const fresh = await call(`/v1/rooms/${room.id}`);
    if (state.room?.id !== room.id) return;
    state.room = fresh;
    renderRoomHeader();
    const listed = state.rooms.find((r) => r.id === fresh.id);
    if (listed) {
      listed.member_count = fresh.member_count;
      renderRooms();
    }
  } catch {
    // The count is cosmetic; the next event tries again.
  }
}

function setConnection(connection, detail) {
  const label = {
    idle: "",
    connecting: "Connecting…",
    live: "Live",
    reconnecting: detail ? `Reconnecting in ${Math.ceil(detail / 1000)}s…` : "Reconnecting…",
    stopped: "Disconnected",
  }[connection];
  const badge = $("connection");
  badge.dataset.state = connection;
  badge.textContent = label;
  badge.title = connection === "live" ? "Receiving new messages as they are posted" : label;
}

// ---------------------------------------------------------------------------------------------
// Messages

function nearBottom() {
  const box = $("messages");
  return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
}

function scrollToBottom() {
  const box = $("messages");
  box.scrollTop = box.scrollHeight;
  $("new-below").hidden = true;
}

/**
 * Adds or updates a message. Events arrive in commit order, but a page of history may be newer
 * than a stream event still on its way, so a plain `message` never overwrites what is shown,
 * an edit never revives a deleted message, and a delete always wins.
 */
function upsert(message, kind) {
  if (message.room_id !== state.room?.id) return;
  const known = state.messages.get(message.id);
  if (known) {
    if (kind === "message" || kind === "history") return;
    if (known.message.deleted && kind !== "message_deleted") return;
    const element = renderMessage(message);
    known.element.replaceWith(element);
    state.messages.set(message.id, { message, element });
    return;
  }
  const follow = nearBottom();
  const element = renderMessage(message);
  state.messages.set(message.id, { message, element });
  // Keep the list in seq order: walk back from the end to the first smaller seq.
  const list = $("message-list");
  let after = list.lastElementChild;
  while (after && (after.dataset.seq === undefined || Number(after.dataset.seq) > message.seq)) {
    after = after.previousElementSibling;
  }
  if (after) after.after(element);
  else list.prepend(element);
  $("empty-room").hidden = true;
  if (kind === "message") {
    if (follow || message.author.id === state.session.user.id) scrollToBottom();
    else $("new-below").hidden = false;
  }
}

function notice(text) {
  const follow = nearBottom();
  $("message-list").append(h("li", { class: "notice" }, text));
  if (follow) scrollToBottom();
}

function renderMessage(message) {
  const own = message.author.id === state.session.user.id;
  const name = message.author.username;
  const actions = [];
  if (!message.deleted) {
    if (own) {
      actions.push(
        h("button", { type: "button", class: "action", onclick: () => startEdit(message) }, "Edit"),
        h("button", { type: "button", class: "action danger", onclick: () => deleteMessage(message) }, "Delete"),
      );
    } else {
      actions.push(h("button", { type: "button", class: "action", onclick: () => openReport(message) }, "Report"));
    }
  }
  return h(
    "li",
    {
      class: `message${own ? " own" : ""}${message.deleted ? " deleted" : ""}`,
      dataset: { id: message.id, seq: message.seq },
      "aria-label": `${name} at ${shortTime(message.created_at)}`,
    },
    h("span", { class: `avatar hue-${hue(name)}`, "aria-hidden": "true" }, name.slice(0, 1).toUpperCase()),
    h(
      "div",
      { class: "bubble" },
      h(
        "div",
        { class: "meta" },
        h("span", { class: "author" }, name),
        h("time", { datetime: message.created_at, title: new Date(message.created_at).toLocaleString() }, shortTime(message.created_at)),
        message.edited_at && !message.deleted ? h("span", { class: "edited", title: message.edited_at }, "edited") : null,
      ),
      h("div", { class: "body" }, message.deleted ? "This message was deleted." : message.body),
      actions.length ? h("div", { class: "actions" }, actions) : null,
    ),
  );
}

/**
 * Posts the composer's text. The key belongs to the text: a retry of the same text (automatic,
 * or the user pressing Send again after a failure) reuses it, so the server stores the message
 * once however many requests arrive; a double click is ignored while a send is in flight.
 */
async function send(event) {
  event?.preventDefault();
  if (state.sending || !state.room) return;
  const input = $("composer-input");
  const text = input.value;
  if (!text.trim()) return;
  if (state.pending?.text !== text) state.pending = { text, key: newKey() };
  const { key } = state.pending;
  const room = state.room;
  state.sending = true;
  $("send-button").disabled = true;
  $("composer-error").textContent = "";
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        const message = await call(`/v1/rooms/${room.id}/messages`, {
          method: "POST",
          body: { body: text },
          headers: { "idempotency-key": key },
        });
        if (state.pending?.key === key) state.pending = null;
        if (input.value === text) input.value = "";
        autosize();
        if (state.room?.id === room.id) upsert(message, "message");
        return;
      } catch (error) {
        if (!(error instanceof ApiError) || !error.transient || attempt >= SEND_ATTEMPTS) throw error;
        $("composer-error").textContent = "Sending again…";
        await delay(300 * 2 ** attempt);
      }
    }
  } catch (error) {
    $("composer-error").textContent = `Not sent: ${error.message}. Press Send to try again.`;
  } finally {
    state.sending = false;
    $("send-button").disabled = false;
  }
}

function autosize() {
  const input = $("composer-input");
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
}

function startEdit(message) {
  const entry = state.messages.get(message.id);
  if (!entry) return;
  const body = entry.element.querySelector(".body");
  const field = h("textarea", { class: "edit-input", rows: 2, maxlength: 4000, "aria-label": "Edit message" });
  field.value = message.body;
  const error = h("p", { class: "error", role: "alert" });
  const cancel = () => rerender(message.id);
  const save = async () => {
    const text = field.value;
    if (!text.trim() || text === message.body) return cancel();
    try {
      const edited = await call(`/v1/rooms/${message.room_id}/messages/${message.id}`, { method: "PATCH", body: { body: text } });
      upsert(edited, "message_edited");
    } catch (failure) {
      error.textContent = failure.message;
    }
  };
  field.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      save();
    } else if (event.key === "Escape") {
      event.preventDefault();
      cancel();
    }
  });
  body.replaceWith(
    h(
      "div",
      { class: "body editing" },
      field,
      h(
        "div",
        { class: "row" },
        h("button", { type: "button", class: "small", onclick: save }, "Save"),
        h("button", { type: "button", class: "small secondary", onclick: cancel }, "Cancel"),
        h("span", { class: "muted small" }, "Enter saves, Esc cancels"),
      ),
      error,
    ),
  );
  entry.element.querySelector(".actions")?.remove();
  field.focus();
}

/** Draws a message again from what is known of it (after an edit is cancelled). */
function rerender(id) {
  const entry = state.messages.get(id);
  if (!entry) return;
  const element = renderMessage(entry.message);
  entry.element.replaceWith(element);
  entry.element = element;
}

async function deleteMessage(message) {
  if (!confirm("Delete this message? Everyone will see that it was deleted.")) return;
  try {
    const deleted = await call(`/v1/rooms/${message.room_id}/messages/${message.id}`, { method: "DELETE" });
    upsert(deleted, "message_deleted");
  } catch (error) {
    $("composer-error").textContent = error.message;
  }
}

function openReport(message) {
  state.reporting = message;
  $("report-quote").textContent = `${message.author.username}: ${message.body}`;
  $("report-reason").value = "";
  $("report-error").textContent = "";
  $("report-dialog").showModal();
  $("report-reason").focus();
}

async function submitReport(event) {
  event.preventDefault();
  const message = state.reporting;
  const reason = $("report-reason").value.trim();
  if (!message || !reason) {
    $("report-error").textContent = "Say briefly what is wrong with it.";
    return;
  }
  try {
    await call(`/v1/rooms/${message.room_id}/messages/${message.id}/report`, { method: "POST", body: { reason } });
    $("report-dialog").close();
    notice("Thanks: the moderators will look at it.");
  } catch (error) {
    $("report-error").textContent = error.message;
  }
}

// ---------------------------------------------------------------------------------------------
// Wiring

function wire() {
  $("auth-form").addEventListener("submit", submitAuth);
  $("logout-button").addEventListener("click", logout);
  $("new-room-form").addEventListener("submit", createRoom);
  $("join-button").addEventListener("click", joinRoom);
  $("leave-button").addEventListener("click", leaveRoom);
  $("older-button").addEventListener("click", loadOlder);
  $("new-below").addEventListener("click", scrollToBottom);
  $("back-button").addEventListener("click", () => {
    closeRoom();
    document.body.classList.remove("in-room");
    history.replaceState(null, "", location.pathname);
    renderRoomHeader();
    renderRooms();
  });
  $("composer").addEventListener("submit", send);
  const input = $("composer-input");
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  input.addEventListener("input", autosize);
  $("messages").addEventListener("scroll", () => {
    if (nearBottom()) $("new-below").hidden = true;
  });
  $("report-form").addEventListener("submit", submitReport);
  $("report-cancel").addEventListener("click", () => $("report-dialog").close());
  // Older pages load as the top of the history scrolls into view.
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && state.messages.size > 0) loadOlder();
  }, { root: $("messages"), rootMargin: "200px 0px 0px 0px" }).observe($("history-top"));
}

async function start() {
  wire();
  const session = loadSession();
  if (!session) return showAuth();
  state.session = session;
  try {
    const me = await api("/v1/me", { token: session.token });
    saveSession({ token: session.token, user: me });
  } catch (error) {
    if (error.status === 401) {
      saveSession(null);
      return showAuth("Your session ended. Log in again.");
    }
    // The server is unreachable for now: carry on with what is stored, calls will say so.
  }
  await showChat();
}

start();
