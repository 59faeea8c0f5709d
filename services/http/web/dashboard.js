// The operators' dashboard: every node with its services, state, uptime, round trip and message
// rates in and out (polled each second; rates are the differences of each node's frame counters
// over the last few polls), cluster events (node up, node down, failover) and a filtered log tail from the
// live activity log, charts of the last hour from analytics, and the open anomalies and content
// reports with their resolve actions. The admin token is pasted in once, kept in sessionStorage
// (gone when the tab closes) and sent only as an Authorization header.

import { api, ApiError } from "./api.js";
import { openStream } from "./sse.js";
import { h, replace, shortTime, duration } from "./dom.js";
import { barChart, lineChart } from "./charts.js";

const TOKEN_KEY = "switchboard.admin-token";
const NODES_EVERY_MS = 1000;
const FIGURES_EVERY_MS = 5000;
const ROOMS_EVERY_MS = 10_000;
const TAIL_MAX = 300;
const EVENTS_MAX = 100;
const EVENT_KINDS = new Set(["node_up", "node_down", "failover"]);
// Message rates are measured over the polls of the last few seconds: one second alone would
// jump with every batch a poll happens to split.
const RATE_WINDOW_MS = 5000;

const $ = (id) => document.getElementById(id);

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  timers: [],
  stream: null,
  nodes: new Map(), // name -> last view, to notice changes between polls
  samples: new Map(), // name -> [{ at, incarnation, sent, received }] of the last RATE_WINDOW_MS
  events: new Map(), // dedupe key -> { element, observers }
  paused: false,
  lastUpdate: null,
};

const admin = (path, options = {}) => api(path, { ...options, token: state.token });

/** Runs a refresh; a 403 or 401 means the token is wrong, anything else is shown and retried. */
async function guarded(what, refresh) {
  try {
    await refresh();
  } catch (error) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      disconnect(`The admin token was refused: ${error.message}`);
    } else {
      $("dash-status").textContent = `${what}: ${error.message}`;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Connecting

function connect() {
  disconnect();
  $("board").hidden = false;
  $("token-form").classList.add("connected");
  $("admin-token").hidden = true;
  $("token-button").hidden = true;
  $("forget-button").hidden = false;
  const every = (ms, what, refresh) => {
    const run = () => guarded(what, refresh);
    run();
    state.timers.push(setInterval(run, ms));
  };
  every(NODES_EVERY_MS, "nodes", refreshNodes);
  every(FIGURES_EVERY_MS, "analytics", refreshFigures);
  every(FIGURES_EVERY_MS, "anomalies", refreshAnomalies);
  every(FIGURES_EVERY_MS, "reports", refreshReports);
  every(ROOMS_EVERY_MS, "rooms", refreshRooms);
  state.timers.push(setInterval(tickUptimes, 1000));
  backfillEvents();
  reloadTail();
  openTail();
}

function disconnect(message = "") {
  state.timers.forEach(clearInterval);
  state.timers = [];
  state.stream?.close();
  state.stream = null;
  $("token-error").textContent = message;
  if (message) {
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    $("board").hidden = true;
    $("admin-token").hidden = false;
    $("token-button").hidden = false;
    $("forget-button").hidden = true;
    $("admin-token").focus();
  }
}

// ---------------------------------------------------------------------------------------------
// Nodes

async function refreshNodes() {
  const list = await admin("/v1/admin/nodes");
  const up = list.nodes.filter((n) => n.state !== "down" && !n.state.startsWith("down"));
  $("stat-nodes").textContent = `${up.length} / ${list.nodes.length}`;
  const down = list.nodes.length - up.length;
  $("stat-nodes-note").textContent = down ? `${down} down` : "all up";
  $("nodes-note").textContent = `as seen by ${list.served_by}`;
  state.lastUpdate = new Date();
  $("dash-status").textContent = `Live · updated ${state.lastUpdate.toLocaleTimeString()} via ${list.served_by}`;
  const rows = list.nodes.map((node) => {
    const before = state.nodes.get(node.name);
    const changed = before && (before.state !== node.state || before.incarnation !== node.incarnation);
    if (before && before.incarnation !== node.incarnation && !node.state.startsWith("down")) {
      node.restarted = new Date();
    } else if (before?.restarted) {
      node.restarted = before.restarted;
    }
    node.seenAt = Date.now();
    node.rates = rates(node, performance.now());
    state.nodes.set(node.name, node);
    return nodeRow(node, changed);
  });
  replace($("node-rows"), rows);
  replace($("log-nodes"), list.nodes.map((n) => h("option", { value: n.name })));
}

/**
 * Frames per second the node's links read (in) and wrote (out), from its counters in this poll
 * and the oldest poll of the window; null until two polls of one incarnation have counts. A
 * restarted node counts from zero again, so its older samples are dropped.
 */
function rates(node, at) {
  if (node.frames_sent == null || node.frames_received == null) return null;
  const sample = { at, incarnation: node.incarnation, sent: node.frames_sent, received: node.frames_received };
  const kept = (state.samples.get(node.name) ?? []).filter(
    (s) => s.incarnation === sample.incarnation && s.sent <= sample.sent && s.received <= sample.received && at - s.at <= RATE_WINDOW_MS,
  );
  kept.push(sample);
  state.samples.set(node.name, kept);
  const first = kept[0];
  const seconds = (at - first.at) / 1000;
  if (kept.length < 2 || seconds <= 0) return null;
  return { in: (sample.received - first.received) / seconds, out: (sample.sent - first.sent) / seconds };
}

function rate(perSecond) {
  if (perSecond >= 10_000) return `${Math.round(perSecond / 1000)}k`;
  if (perSecond >= 100) return `${Math.round(perSecond)}`;
  return perSecond.toFixed(1);
}

function rateCell(node) {
  if (!node.rates) return h("td", { class: "num rates" }, "–");
  const { in: read, out: written } = node.rates;
  return h(
    "td",
    { class: "num rates", dataset: { in: read.toFixed(2), out: written.toFixed(2) }, title: "frames per second its links read / wrote: calls, replies, casts, broadcasts, heartbeats" },
    h("span", { class: "rate-in" }, `↓ ${rate(read)}`),
    " ",
    h("span", { class: "rate-out" }, `↑ ${rate(written)}`),
  );
}

function stateClass(node) {
  if (node.state === "self") return "state-self";
  if (node.state === "up") return "state-up";
  return "state-down";
}

function nodeRow(node, changed) {
  const down = node.state.startsWith("down");
  return h(
    "tr",
    { class: changed ? "flash" : null, dataset: { node: node.name, state: down ? "down" : "up", incarnation: node.incarnation } },
    h("td", { class: "node-name" }, node.name, h("div", { class: "muted small" }, node.address)),
    h("td", {}, h("span", { class: `state ${stateClass(node)}` }, node.state === "self" ? "up · this node" : node.state)),
    h("td", {}, h("div", { class: "chips" }, node.services.filter((s) => !s.startsWith("switchboard.")).map((s) => h("span", { class: "chip" }, s)))),
    h("td", { class: "num uptime", title: node.since_start ? "at least: it was up when this http node started" : "" },
      node.uptime_seconds === null ? "–" : `${node.since_start ? "≥ " : ""}${duration(node.uptime_seconds)}`),
    h("td", { class: "num" }, node.rtt_ms === null ? (node.state === "self" ? "local" : "–") : `${node.rtt_ms.toFixed(2)} ms`),
    rateCell(node),
    h("td", { class: "small" }, h("code", {}, node.incarnation.slice(-8)), node.restarted ? h("div", { class: "muted" }, `restarted ${node.restarted.toLocaleTimeString()}`) : null),
  );
}

/** Advances the uptimes between polls, so they tick each second even when a poll is slow. */
function tickUptimes() {
  for (const row of $("node-rows").children) {
    const node = state.nodes.get(row.dataset.node);
    if (!node || node.uptime_seconds === null) continue;
    const cell = row.querySelector(".uptime");
    const seconds = node.uptime_seconds + (Date.now() - node.seenAt) / 1000;
    cell.textContent = `${node.since_start ? "≥ " : ""}${duration(seconds)}`;
  }
}

// ---------------------------------------------------------------------------------------------
// Cluster events and the log tail: one live stream of the activity log feeds both.

async function backfillEvents() {
  await guarded("events", async () => {
    const pages = await Promise.all(
      [...EVENT_KINDS].map((kind) => admin(`/v1/admin/logs?kind=${kind}&limit=30`)),
    );
    const entries = pages.flatMap((p) => p.entries).sort((a, b) => a.at.localeCompare(b.at));
    for (const entry of entries) clusterEvent(entry);
  });
}

/**
 * Shows a node going up or down, or a failover. Every node that sees a peer go down logs it, so
 * one incident is one line (the peer and its incarnation) that counts its observers.
 */
function clusterEvent(entry) {
  const f = entry.fields ?? {};
  const subject = entry.kind === "failover" ? `${f.service ?? "?"}:${f.from ?? "?"}:${f.trace_id ?? entry.id}` : `${f.peer ?? "?"}:${f.incarnation ?? "?"}`;
  const key = `${entry.kind}:${subject}`;
  const known = state.events.get(key);
  if (known) {
    known.observers.add(entry.node);
    known.seenBy.textContent = `seen by ${known.observers.size} node${known.observers.size === 1 ? "" : "s"}`;
    return;
  }
  const text = {
    node_down: () => `${f.peer} down (${f.reason ?? "?"})`,
    node_up: () => `${f.peer} up`,
    failover: () => `${f.service} call moved off ${f.from}`,
  }[entry.kind]();
  const seenBy = h("span", { class: "muted small" }, `seen by ${entry.node}`);
  const element = h(
    "li",
    { dataset: { kind: entry.kind, peer: f.peer ?? f.from ?? "" } },
    h("time", { datetime: entry.at }, new Date(entry.at).toLocaleTimeString()),
    h("span", { class: `kind kind-${entry.kind}` }, entry.kind.replace("_", " ")),
    h("span", { class: "event-text" }, text),
    seenBy,
  );
  state.events.set(key, { element, observers: new Set([entry.node]), seenBy });
  $("events").prepend(element);
  while ($("events").children.length > EVENTS_MAX) $("events").lastElementChild.remove();
}

function filters() {
  return {
    level: $("log-level").value,
    kind: $("log-kind").value.trim(),
    node: $("log-node").value.trim(),
    q: $("log-text").value.trim(),
  };
}

const RANK = { ERROR: 0, WARN: 1, INFO: 2, DEBUG: 3, TRACE: 4 };

function matches(entry, f) {
  return (
    (!f.level || (RANK[entry.level] ?? 9) <= RANK[f.level.toUpperCase()]) &&
    (!f.kind || entry.kind === f.kind) &&
    (!f.node || entry.node === f.node) &&
    (!f.q || entry.message.includes(f.q) || JSON.stringify(entry.fields).includes(f.q))
  );
}

/** Loads the newest entries that match the filters (the stream adds the ones after them). */
async function reloadTail() {
  await guarded("logs", async () => {
    const f = filters();
    const query = new URLSearchParams({ limit: "100" });
    for (const [name, value] of Object.entries(f)) if (value) query.set(name, value);
    const page = await admin(`/v1/admin/logs?${query}`);
    replace($("log-tail"), page.entries.map(logLine));
    $("logs-note").textContent = "";
  });
}

function logLine(entry) {
  const fields = Object.entries(entry.fields ?? {})
    .filter(([name]) => name !== "kind")
    .map(([name, value]) => `${name}=${typeof value === "string" ? value : JSON.stringify(value)}`)
    .join(" ");
  return h(
    "li",
    { class: `level-${entry.level}` },
    h("time", { datetime: entry.at }, new Date(entry.at).toLocaleTimeString()),
    h("span", {}, entry.level),
    h("span", {}, entry.node),
    h("span", {}, h("strong", {}, entry.kind), " ", entry.message, " ", h("span", { class: "fields" }, fields)),
  );
}

function openTail() {
  state.stream = openStream({
    url: "/v1/admin/logs/stream",
    headers: () => ({ authorization: `Bearer ${state.token}` }),
    onEvent: (event) => {
      if (event.type === "lagged") {
        $("logs-note").textContent = "some entries were skipped (the tail fell behind)";
        return;
      }
      if (event.type !== "log") return;
      let entry;
      try {
        entry = JSON.parse(event.data);
      } catch {
        return;
      }
      if (EVENT_KINDS.has(entry.kind)) clusterEvent(entry);
      if (!state.paused && matches(entry, filters())) {
        const tail = $("log-tail");
        tail.prepend(logLine(entry));
        while (tail.children.length > TAIL_MAX) tail.lastElementChild.remove();
      }
    },
    onState: (connection, detail) => {
      $("events-note").textContent = connection === "live" ? "live" : connection === "stopped" ? "stopped" : "reconnecting…";
      if (connection === "stopped" && (detail === 401 || detail === 403)) disconnect("The admin token was refused.");
    },
  });
}

// ---------------------------------------------------------------------------------------------
// Figures

async function refreshFigures() {
  const figures = await admin("/v1/admin/analytics?window=1h");
  $("stat-messages").textContent = String(figures.messages.total);
  const last = figures.messages.series.at(-2)?.count ?? 0;
  $("stat-messages-note").textContent = `${last} in the last full minute`;
  $("stat-users").textContent = String(figures.active_users.total);
  $("stat-users-note").textContent = `${figures.new_users?.total ?? 0} new accounts`;
  const latency = figures.delivery_latency_ms;
  $("stat-latency").textContent = latency?.count ? `${latency.p50 ?? ">"} / ${latency.p99 ?? ">"} ms` : "–";
  $("stat-latency-note").textContent = latency?.count ? `${latency.count} deliveries measured` : "no deliveries yet";
  replace($("chart-messages"), lineChart([{ name: "messages", points: figures.messages.series }], { title: "Messages per minute" }));
  replace($("chart-users"), lineChart([{ name: "active users", points: figures.active_users.series }], { title: "Active users per minute" }));
  const ms = (v) => (v >= 1000 ? `${v / 1000}s` : `${v}`);
  const buckets = (latency?.buckets ?? []).map((b) => ({ label: b.le === null ? "more" : ms(b.le), count: b.count }));
  replace($("chart-latency"), buckets.length ? barChart(buckets, { title: "Delivery latency histogram (ms)", series: 4 }) : h("p", { class: "empty-note" }, "No live deliveries in the last hour."));
  state.topRooms = (figures.top_rooms ?? []).slice(0, 5);
}

async function refreshRooms() {
  const rooms = state.topRooms ?? [];
  if (rooms.length === 0) {
    replace($("chart-rooms"), h("p", { class: "empty-note" }, "No messages in the last hour."));
    replace($("chart-rooms-legend"));
    return;
  }
  const series = await Promise.all(
    rooms.map(async (room) => {
      const figures = await admin(`/v1/admin/rooms/${room.room_id}/analytics?window=1h`);
      const name = figures.room_name ? `#${figures.room_name}` : `room ${room.room_id}`;
      return { name, points: figures.messages.series, total: room.count };
    }),
  );
  replace($("chart-rooms"), lineChart(series, { title: "Messages per minute by room" }));
  replace($("chart-rooms-legend"), series.map((one, i) => h("span", { class: `series-${i % 6}` }, `${one.name} (${one.total})`)));
}

async function refreshAnomalies() {
  const list = await admin("/v1/admin/anomalies");
  const rows = list.anomalies.slice(0, 20).map((a) =>
    h(
      "tr",
      { dataset: { anomaly: a.id, kind: a.kind } },
      h("td", {}, h("span", { class: `sev-${a.severity}` }, a.severity)),
      h("td", {}, h("strong", {}, a.kind.replace("_", " ")), " ", a.summary),
      h("td", { class: "num" }, shortTime(a.last_seen)),
    ),
  );
  replace($("anomaly-rows"), rows.length ? rows : h("tr", {}, h("td", { colspan: 3, class: "empty-note" }, "Nothing unusual.")));
}

async function refreshReports() {
  const list = await admin("/v1/admin/reports?status=open");
  const rows = list.reports.map((report) =>
    h(
      "tr",
      { dataset: { report: report.id } },
      h("td", { class: "num" }, shortTime(report.created_at)),
      h("td", {}, report.reason),
      h("td", { class: "small" }, `room ${report.room_id}, message ${report.message_id}, by user ${report.reporter_id}`),
      h(
        "td",
        {},
        h("div", { class: "row" },
          h("button", { type: "button", class: "small secondary", onclick: () => resolve(report, "dismiss") }, "Dismiss"),
          h("button", { type: "button", class: "small danger secondary", onclick: () => resolve(report, "delete_message") }, "Delete message")),
      ),
    ),
  );
  replace($("report-rows"), rows.length ? rows : h("tr", {}, h("td", { colspan: 4, class: "empty-note" }, "No open reports.")));
}

async function resolve(report, action) {
  $("reports-error").textContent = "";
  try {
    await admin(`/v1/admin/reports/${report.id}/resolve`, {
      method: "POST",
      body: { action, note: action === "dismiss" ? "dismissed from the dashboard" : "deleted from the dashboard" },
    });
  } catch (error) {
    $("reports-error").textContent = error.message;
  }
  await guarded("reports", refreshReports);
}

// ---------------------------------------------------------------------------------------------
// Wiring

function wire() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("admin-token").value.trim();
    if (!token) return;
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("admin-token").value = "";
    connect();
  });
  $("forget-button").addEventListener("click", () => disconnect("Token forgotten."));
  let debounce = null;
  const refilter = () => {
    clearTimeout(debounce);
    debounce = setTimeout(reloadTail, 300);
  };
  for (const id of ["log-level", "log-kind", "log-node", "log-text"]) {
    $(id).addEventListener("input", refilter);
  }
  $("log-filters").addEventListener("submit", (event) => event.preventDefault());
  $("log-pause").addEventListener("click", () => {
    state.paused = !state.paused;
    $("log-pause").textContent = state.paused ? "Resume" : "Pause";
  });
}

wire();
if (state.token) connect();
else $("admin-token").focus();
