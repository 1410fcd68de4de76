// What every Parley page shares: the list of nodes and moving between them, API calls that
// retry on another node, resumable streams with a liveness check, and sends that keep their
// client id so a retry never duplicates.
//
// Failover is the client's whole job and it is small: any node serves everything, a write
// retried with the same client id is applied once, and a stream reopened anywhere with the
// last cursor sends exactly the events that were missed.

/** How often a stream pings its node, and checks it still hears from it. */
export const PING_EVERY_MS = 250;
/** A stream that heard nothing (no event, no pong) this long moves to another node: with the
 * check every PING_EVERY_MS, a page leaves a silent node within 1.75 s and reconnects at once
 * to the next, inside the 2 s reconnect the product promises even when a host is lost without
 * a reset. A node answers a ping in milliseconds: six unanswered in a row is a lost node (or a
 * link too poor to chat on), and a move costs only a resume from the cursor. */
export const SILENT_AFTER_MS = 1500;
/** Longest one API request may take before it is retried on another node. */
export const REQUEST_TIMEOUT_MS = 4000;
/** How long a write keeps being retried (across nodes) before it is shown as failed. */
export const WRITE_GIVE_UP_MS = 30000;
/** Reconnect backoff: first delay, and the most it grows to. */
export const BACKOFF_FIRST_MS = 200;
export const BACKOFF_MAX_MS = 5000;
/** How often the node list is refreshed from the cluster view. */
export const NODES_REFRESH_MS = 30000;

/** A random id for a client-generated key (request ids, message ids). */
export function newId(prefix) {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return prefix + "-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A delay for attempt `n` (0-based): doubling from BACKOFF_FIRST_MS, capped, with full jitter
 * in its upper half so clients of a failed node do not all return at once. */
export function backoffMs(n) {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** Math.min(n, 10));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** An answer the API refused (4xx/5xx with the API's error shape). */
export class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The nodes a page may use, the one in use first. */
export class Nodes {
  /** `bases`: base URLs (`http://host:port`); the first is used first. */
  constructor(bases) {
    this.bases = [...new Set(bases.map((b) => b.replace(/\/+$/, "")))];
    this.index = 0;
    this.listeners = new Set();
    this.lastRefresh = 0;
  }

  current() {
    return this.bases[this.index % this.bases.length];
  }

  /** Moves to the next node; tells listeners. Answers the new base. */
  next() {
    this.index = (this.index + 1) % this.bases.length;
    for (const listener of this.listeners) listener(this.current());
    return this.current();
  }

  onChange(listener) {
    this.listeners.add(listener);
  }

  /** Learns every member's address from the cluster view of the node in use (same scheme). */
  async refresh() {
    this.lastRefresh = Date.now();
    const base = this.current();
    const scheme = new URL(base).protocol;
    try {
      const response = await fetchWithTimeout(base + "/api/v1/cluster", {}, REQUEST_TIMEOUT_MS);
      if (!response.ok) return;
      const view = await response.json();
      const members = (view.members || [])
        .map((m) => m.http_addr)
        .filter((addr) => typeof addr === "string" && addr.length > 0)
        .map((addr) => scheme + "//" + addr);
      const known = new Set(this.bases);
      for (const member of members) if (!known.has(member)) this.bases.push(member);
    } catch (_) {
      // The next refresh or failover tries again.
    }
  }

  /** Refreshes at most every NODES_REFRESH_MS. */
  maybeRefresh() {
    if (Date.now() - this.lastRefresh > NODES_REFRESH_MS) this.refresh();
  }
}

async function fetchWithTimeout(url, options, timeoutMs) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    return await fetch(url, { ...options, signal: controller.signal });
  } finally {
    clearTimeout(timer);
  }
}

/** API calls with a credential, moved to another node when one fails or does not answer. */
export class Client {
  constructor(nodes, token = null) {
    this.nodes = nodes;
    this.token = token;
    this.onTrouble = () => {};
  }

  /**
   * `method` `path` with a JSON `body`. Network failures, timeouts and 503s are retried on the
   * next node with backoff until `giveUpMs`; every Parley write carries a client id or is
   * idempotent, so a retry of a write that did commit changes nothing. Answers the parsed body
   * (null for 204); throws ApiFailure for a refusal and for giving up.
   */
  async call(method, path, body = undefined, { giveUpMs = WRITE_GIVE_UP_MS, raw = false } = {}) {
    const started = Date.now();
    for (let attempt = 0; ; attempt++) {
      const base = this.nodes.current();
      const headers = { accept: "application/json" };
      if (this.token) headers.authorization = "Bearer " + this.token;
      if (body !== undefined) headers["content-type"] = "application/json";
      let retryAfterMs = 0;
      let why;
      try {
        const response = await fetchWithTimeout(
          base + path,
          { method, headers, body: body === undefined ? undefined : JSON.stringify(body) },
          REQUEST_TIMEOUT_MS,
        );
        if (response.status !== 503) {
          this.onTrouble(false);
          if (raw && response.ok) return response;
          const text = await response.text();
          const parsed = text ? safeJson(text) : null;
          if (response.ok) return parsed;
          const error = (parsed && parsed.error) || {};
          throw new ApiFailure(response.status, error.code || "http_" + response.status,
            error.message || response.statusText);
        }
        retryAfterMs = 1000 * Number(response.headers.get("retry-after") || 0);
        why = "busy";
      } catch (error) {
        if (error instanceof ApiFailure) throw error;
        why = "unreachable";
      }
      this.onTrouble(true);
      if (Date.now() - started > giveUpMs) {
        throw new ApiFailure(0, why, "no node answered; check the connection and retry");
      }
      this.nodes.next();
      await sleep(Math.max(retryAfterMs, backoffMs(attempt)));
    }
  }
}

function safeJson(text) {
  try {
    return JSON.parse(text);
  } catch (_) {
    return null;
  }
}

function base64url(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/**
 * A resumable WebSocket stream. `path(cursor)` builds the path and query from the cursor;
 * `onFrame(frame)` gets every frame except pongs; frames that carry a cursor (`cursorOf`)
 * advance it, so a reconnect to any node sends exactly what was missed. `onStatus(status)` is
 * told "connecting", "live", "reconnecting" or "closed"; `onEnd(code, reason)` is told of a
 * close that reconnecting cannot fix (a session that ended).
 */
export class Stream {
  constructor(nodes, token, { path, cursor = "0", cursorOf, onFrame, onStatus, onEnd, finalCodes }) {
    this.nodes = nodes;
    this.token = token;
    this.path = path;
    this.cursor = cursor;
    this.cursorOf = cursorOf || ((frame) => (frame.seq !== undefined ? String(frame.seq) : null));
    this.onFrame = onFrame;
    this.onStatus = onStatus || (() => {});
    this.onEnd = onEnd || (() => {});
    this.finalCodes = finalCodes || [4001];
    this.socket = null;
    this.failures = 0;
    this.stopped = false;
    this.lastHeard = 0;
    this.timer = null;
    this.moves = 0;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearInterval(this.timer);
    if (this.socket) this.socket.close(1000, "page closed the stream");
    this.onStatus("closed");
  }

  /** Sends a frame now if the stream is open (typing indicators: best effort). */
  send(frame) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(frame));
    }
  }

  /** The node in use, as a ws(s) base. */
  socketBase() {
    return this.nodes.current().replace(/^http/, "ws");
  }

  connect() {
    if (this.stopped) return;
    this.onStatus(this.failures === 0 ? "connecting" : "reconnecting");
    let socket;
    try {
      socket = new WebSocket(this.socketBase() + this.path(this.cursor), [
        "parley",
        "parley-token." + base64url(this.token),
      ]);
    } catch (_) {
      this.retry();
      return;
    }
    this.socket = socket;
    this.lastHeard = Date.now();
    socket.onopen = () => {
      this.failures = 0;
      this.lastHeard = Date.now();
      // Where the page's stream is now (for people and tests looking at the page).
      document.documentElement.dataset.parleyStreamNode = this.nodes.current();
      this.onStatus("live");
    };
    socket.onmessage = (message) => {
      this.lastHeard = Date.now();
      const frame = safeJson(message.data);
      if (!frame || frame.type === "pong") return;
      const cursor = this.cursorOf(frame);
      if (cursor !== null && cursor !== undefined) {
        if (isNumeric(cursor) && isNumeric(this.cursor) && BigInt(cursor) <= BigInt(this.cursor)) {
          return; // already shown: a resume never repeats, but a page never trusts that alone
        }
        this.cursor = String(cursor);
      }
      this.onFrame(frame);
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      clearInterval(this.timer);
      if (this.stopped) return;
      if (this.finalCodes.includes(event.code)) {
        this.stopped = true;
        this.onStatus("closed");
        this.onEnd(event.code, event.reason);
        return;
      }
      this.retry();
    };
    clearInterval(this.timer);
    this.timer = setInterval(() => this.watch(socket), PING_EVERY_MS);
  }

  /** Pings, and gives up on a node that went silent (a lost host or link sends no reset). */
  watch(socket) {
    if (this.socket !== socket) return;
    if (Date.now() - this.lastHeard > SILENT_AFTER_MS) {
      this.socket = null;
      clearInterval(this.timer);
      socket.onclose = null;
      try {
        socket.close(4000, "silent");
      } catch (_) {
        // already closing
      }
      this.retry();
      return;
    }
    if (socket.readyState === WebSocket.OPEN) socket.send('{"type":"ping"}');
  }

  retry() {
    if (this.stopped) return;
    this.onStatus("reconnecting");
    const delay = this.failures === 0 ? 0 : backoffMs(this.failures - 1);
    this.failures += 1;
    this.moves += 1;
    this.nodes.next();
    setTimeout(() => this.connect(), delay);
  }
}

function isNumeric(value) {
  return /^[0-9]{1,20}$/.test(String(value));
}

/**
 * Messages being sent, one at a time in the order they were written (so the other side reads
 * them in that order, whatever node each try reaches). Each keeps its client id from the first
 * try, so a retry (automatic, or the user's after a failure) is applied once. `onChange(item)`
 * is told of every state change: "sending", "sent" (with `seq`) or "failed" (with `error`).
 */
export class Outbox {
  constructor(client, pathFor, onChange) {
    this.client = client;
    this.pathFor = pathFor;
    this.onChange = onChange;
    this.items = new Map();
    this.queue = [];
    this.busy = false;
  }

  send(target, text) {
    const item = { id: newId("m"), target, text, state: "sending", seq: null, error: null };
    this.items.set(item.id, item);
    this.onChange(item);
    this.queue.push(item);
    this.pump();
    return item;
  }

  retry(id) {
    const item = this.items.get(id);
    if (!item || item.state !== "failed") return;
    item.state = "sending";
    item.error = null;
    this.onChange(item);
    this.queue.push(item);
    this.pump();
  }

  /** Marks the message with this client id as sent when its event arrives from the stream. */
  seen(clientMsgId, seq) {
    const item = this.items.get(clientMsgId);
    if (item && item.state !== "sent") {
      item.state = "sent";
      item.seq = seq;
      this.onChange(item);
    }
  }

  async pump() {
    if (this.busy) return;
    this.busy = true;
    try {
      while (this.queue.length > 0) {
        const item = this.queue.shift();
        if (item.state === "sent") continue;
        try {
          const answer = await this.client.call("POST", this.pathFor(item.target), {
            client_msg_id: item.id,
            text: item.text,
          });
          if (item.state !== "sent") {
            item.state = "sent";
            item.seq = answer && answer.seq;
            this.onChange(item);
          }
        } catch (error) {
          if (item.state === "sent") continue;
          item.state = "failed";
          item.error = error.message || String(error);
          this.onChange(item);
        }
      }
    } finally {
      this.busy = false;
    }
  }
}

/** `el("div", {class: "x", onclick: f}, child, "text")`: builds DOM without innerHTML, so no
 * text from the network is ever parsed as markup. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      node.className = value;
    } else if (key === "dataset") {
      Object.assign(node.dataset, value);
    } else if (value === true) {
      node.setAttribute(key, "");
    } else {
      node.setAttribute(key, String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** A banner that says honestly when the page is not connected. */
export function connectionBanner(root) {
  const banner = el("div", { class: "banner", role: "status", "aria-live": "polite", hidden: true });
  root.prepend(banner);
  return (status) => {
    const text = {
      connecting: "Connecting…",
      reconnecting: "Reconnecting… your messages are kept and will be sent.",
      closed: "",
      live: "",
    }[status];
    banner.textContent = text || "";
    banner.hidden = !text;
    banner.dataset.status = status;
  };
}

/** `hh:mm` of a time in ms. */
export function clock(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** The base URL of the node that served this page (pages served by a node start there). */
export function pageNodes() {
  return new Nodes([location.origin]);
}
