// The agent console: login, availability per channel with reasons, offers with a countdown,
// several chats side by side with unread marks, transfer, complete, callbacks due, and a
// sound and title flash on new offers. It follows the agent's feed stream, and when its node
// fails it moves to another and resumes from the last feed item it saw.

import { Client, Outbox, Stream, clock, connectionBanner, el, pageNodes } from "./session.js";

const STORE_KEY = "parley.agent";
const CHANNELS = ["chat", "callback", "email"];
const REASONS = ["break", "lunch", "meeting", "training", "after_call_work"];
const OUTCOMES = ["solved", "follow_up", "not_solved"];
const CALLBACK_OUTCOMES = ["reached", "no_answer", "busy", "voicemail", "wrong_number"];
const TYPING_SHOWN_MS = 4000;
const TYPING_EVERY_MS = 2000;

const root = document.getElementById("console");
const nodes = pageNodes();
const client = new Client(nodes);
const setStatus = connectionBanner(document.body);
client.onTrouble = (trouble) => setStatus(trouble ? "reconnecting" : "live");

let agent = null; // the console view
let stream = null;
const offers = new Map(); // activity id → {card, until_ms}
const chats = new Map(); // chat id → panel state
const callbacks = new Map(); // activity id → card
let queues = [];
let flashing = null;

const lists = {
  offers: el("section", { class: "offers", "aria-label": "Offers", "data-test": "offers" }),
  chats: el("section", { class: "chats", "aria-label": "Chats", "data-test": "chats" }),
  callbacks: el("section", { class: "callbacks", "aria-label": "Callbacks", "data-test": "callbacks" }),
};

start();

async function start() {
  await nodes.refresh();
  const saved = safeParse(sessionStorage.getItem(STORE_KEY));
  if (saved && saved.token) {
    client.token = saved.token;
    await open();
  } else {
    showLogin();
  }
}

function showLogin(message) {
  if (stream) stream.stop();
  stream = null;
  sessionStorage.removeItem(STORE_KEY);
  client.token = null;
  offers.clear();
  chats.clear();
  callbacks.clear();
  const error = el("p", { class: "error", role: "alert" }, message || "");
  const form = el(
    "form",
    { class: "login card", "data-test": "login" },
    el("h1", {}, "Agent sign-in"),
    el("label", {}, "Agent id", el("input", { name: "agent_id", required: true, autocomplete: "username", maxlength: 64 })),
    el("label", {}, "Password", el("input", { name: "password", type: "password", required: true, autocomplete: "current-password" })),
    error,
    el("button", { type: "submit" }, "Sign in"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    form.querySelector("button").disabled = true;
    try {
      const answer = await client.call("POST", "/api/v1/agents/login", {
        agent_id: String(data.get("agent_id")).trim(),
        password: String(data.get("password")),
      });
      client.token = answer.token;
      sessionStorage.setItem(STORE_KEY, JSON.stringify({ token: answer.token }));
      await open();
    } catch (failure) {
      form.querySelector("button").disabled = false;
      error.textContent = failure.code === "rate_limited" ? "Too many attempts; wait a minute." : failure.message;
    }
  });
  root.replaceChildren(form);
}

/** Loads the console and follows the feed from where the console stands. */
async function open() {
  try {
    agent = await client.call("GET", "/api/v1/agents/me/activities");
    queues = (await client.call("GET", "/api/v1/queues")) || [];
  } catch (failure) {
    showLogin(failure.status === 401 ? "Your session has ended; sign in again." : failure.message);
    return;
  }
  for (const id of [...offers.keys()]) removeOffer(id);
  chats.clear();
  callbacks.clear();
  renderShell();
  await reconcile(agent);
  if (stream) stream.stop();
  stream = new Stream(nodes, client.token, {
    path: (cursor) => `/api/v1/agents/me/stream?after=${encodeURIComponent(cursor)}`,
    cursor: String(agent.feed_last_seq),
    onFrame: onFeed,
    onStatus: setStatus,
    finalCodes: [4001, 4410],
    onEnd: (code) => {
      if (code === 4410) open(); // behind the kept feed: reload the console and resume
      else showLogin("Your session has ended (signed in elsewhere or signed out).");
    },
  });
  stream.start();
  addEventListener("focus", stopFlash);
}

function renderShell() {
  const header = el(
    "header",
    { class: "agent-bar" },
    el("strong", { "data-test": "agent-name" }, agent.name),
    availabilityControls(),
    el("button", { type: "button", class: "secondary", "data-test": "logout", onclick: logout }, "Sign out"),
  );
  root.replaceChildren(header, lists.offers, lists.chats, lists.callbacks);
  lists.offers.replaceChildren(el("h2", {}, "Offers"));
  lists.chats.replaceChildren();
  lists.callbacks.replaceChildren(el("h2", {}, "Callbacks"));
}

function availabilityControls() {
  const boxes = CHANNELS.map((channel) =>
    el("label", { class: "toggle" },
      el("input", { type: "checkbox", name: channel, "data-test": `ready-${channel}`, checked: Boolean(agent.ready && agent.ready[channel]) }),
      ` ${channel}`));
  const reason = el("select", { name: "reason", "aria-label": "Not ready reason", "data-test": "reason" },
    el("option", { value: "" }, "reason…"), REASONS.map((r) => el("option", { value: r, selected: agent.not_ready_reason === r }, r.replace(/_/g, " "))));
  const form = el("form", { class: "availability", "data-test": "availability" }, el("span", {}, "Ready for:"), boxes, reason);
  form.addEventListener("change", async () => {
    const channels = {};
    for (const channel of CHANNELS) channels[channel] = form.elements[channel].checked;
    const body = { channels };
    if (reason.value) body.reason = reason.value;
    try {
      agent = await client.call("PUT", "/api/v1/agents/me/availability", body);
      form.dataset.saved = JSON.stringify(channels);
    } catch (failure) {
      alert("Could not change availability: " + failure.message);
    }
  });
  return form;
}

async function logout() {
  try {
    await client.call("POST", "/api/v1/agents/logout");
    showLogin("Signed out.");
  } catch (failure) {
    alert(failure.code === "conflict" ? "Complete your chats and callbacks before signing out." : failure.message);
  }
}

/** Brings offers, chats and callbacks in line with a console view. */
async function reconcile(view) {
  const present = new Set();
  for (const activity of view.activities || []) {
    present.add(activity.id);
    const state = activity.status && activity.status.state;
    if (state === "offered") {
      addOffer({ activity_id: activity.id, channel: activity.channel, queue_id: activity.queue_id, until_ms: activity.status.until_ms });
    } else if (state === "assigned") {
      removeOffer(activity.id);
      if (activity.channel === "chat" && !chats.has(activity.id)) await addChat(activity);
      if (activity.channel === "callback" && !callbacks.has(activity.id)) addCallback(activity);
    }
  }
  for (const id of [...offers.keys()]) if (!present.has(id)) removeOffer(id);
  for (const id of [...callbacks.keys()]) if (!present.has(id)) removeCallback(id);
  for (const [id, chat] of chats) if (!present.has(id)) closeChat(id, chat.endedText || "released");
}

let refreshing = null;
/** Reloads the console (after assignments and releases), one reload at a time. */
function refresh() {
  if (refreshing) {
    refreshing.again = true;
    return;
  }
  refreshing = { again: false };
  (async () => {
    do {
      refreshing.again = false;
      try {
        agent = await client.call("GET", "/api/v1/agents/me/activities");
        await reconcile(agent);
      } catch (_) {
        // the stream's next item triggers another refresh
      }
    } while (refreshing.again);
    refreshing = null;
  })();
}

function onFeed(item) {
  switch (item.type) {
    case "offered":
      addOffer(item);
      notify();
      break;
    case "offer_withdrawn":
      removeOffer(item.activity_id);
      break;
    case "assigned":
    case "released":
      removeOffer(item.activity_id);
      if (item.type === "released" && chats.has(item.activity_id)) chats.get(item.activity_id).endedText = item.reason;
      refresh();
      break;
    case "availability":
      for (const channel of CHANNELS) {
        const box = root.querySelector(`input[name=${channel}]`);
        if (box) box.checked = Boolean(item.ready && item.ready[channel]);
      }
      break;
    case "chat_event":
      onChatEvent(item.chat_id, item.event || {});
      break;
    case "typing": {
      const chat = chats.get(item.chat_id);
      if (chat) showTyping(chat);
      break;
    }
    case "logged_out":
      break;
    default:
      break;
  }
}

function addOffer(offer) {
  if (offers.has(offer.activity_id)) return;
  const countdown = el("span", { class: "countdown" });
  const accept = el("button", { type: "button", "data-test": "accept" }, "Accept");
  const card = el("article", { class: "offer", dataset: { activityId: offer.activity_id } },
    el("p", {}, `${offer.channel} from ${offer.queue_id}`), countdown, accept);
  accept.addEventListener("click", async () => {
    accept.disabled = true;
    try {
      await client.call("POST", `/api/v1/activities/${encodeURIComponent(offer.activity_id)}/accept`);
      removeOffer(offer.activity_id);
      refresh();
    } catch (failure) {
      accept.disabled = false;
      countdown.textContent = failure.code === "conflict" ? "offer expired" : failure.message;
    }
  });
  const tick = () => {
    const left = Math.max(0, Math.round((offer.until_ms - Date.now()) / 1000));
    countdown.textContent = `${left} s to accept`;
    if (left === 0) countdown.textContent = "expired";
  };
  tick();
  const timer = setInterval(tick, 250);
  offers.set(offer.activity_id, { card, timer });
  lists.offers.append(card);
}

function removeOffer(id) {
  const offer = offers.get(id);
  if (!offer) return;
  clearInterval(offer.timer);
  offer.card.remove();
  offers.delete(id);
}

/** A sound and a flashing title, until the console has focus. */
function notify() {
  try {
    const audio = new AudioContext();
    const tone = audio.createOscillator();
    const gain = audio.createGain();
    tone.frequency.value = 880;
    gain.gain.value = 0.1;
    tone.connect(gain).connect(audio.destination);
    tone.start();
    tone.stop(audio.currentTime + 0.2);
  } catch (_) {
    // no sound available: the title still flashes
  }
  if (flashing || document.hasFocus()) return;
  const title = document.title;
  let on = false;
  flashing = setInterval(() => {
    on = !on;
    document.title = on ? "● New offer" : title;
  }, 800);
  flashing.title = title;
}

function stopFlash() {
  if (!flashing) return;
  clearInterval(flashing);
  document.title = flashing.title || document.title;
  flashing = null;
}

async function addChat(activity) {
  const summary = activity.chat || {};
  const log = el("ol", { class: "messages", "data-test": "messages", "aria-live": "polite" });
  const typing = el("p", { class: "typing", hidden: true }, "The customer is typing…");
  const unread = el("span", { class: "unread", hidden: true, "data-test": "unread" });
  const input = el("textarea", { rows: 2, maxlength: 2000, "aria-label": "Message", "data-test": "composer" });
  const composer = el("form", { class: "composer" }, input, el("button", { type: "submit", "data-test": "send" }, "Send"));
  const panel = el("article", { class: "chat-panel", tabindex: "-1", dataset: { chatId: activity.id } },
    el("header", {}, el("strong", {}, summary.customer_name || "Customer"), " ", unread,
      el("small", {}, summary.customer_email || "")),
    summary.question ? el("p", { class: "question" }, summary.question) : null,
    log, typing, composer, chatActions(activity.id));
  // While its history loads, the chat's live events wait in `pending`, so events show in order.
  const chat = { id: activity.id, panel, log, typing, unread, unreadCount: 0, lastSeq: 0, bubbles: new Map(), lastTyping: 0, typingTimer: null, loading: true, pending: [] };
  chat.outbox = new Outbox(client, (id) => `/api/v1/chats/${encodeURIComponent(id)}/messages`, (item) => renderOwn(chat, item));
  chats.set(activity.id, chat);
  lists.chats.append(panel);
  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    send(chat, input);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      send(chat, input);
    }
  });
  input.addEventListener("input", () => {
    if (Date.now() - chat.lastTyping < TYPING_EVERY_MS || !stream) return;
    chat.lastTyping = Date.now();
    stream.send({ type: "typing", chat_id: chat.id });
  });
  panel.addEventListener("focusin", () => markRead(chat));
  panel.addEventListener("click", () => markRead(chat));
  // The chat so far; live events come through the feed from here on.
  try {
    let after = "0";
    for (;;) {
      const page = await client.call("GET", `/api/v1/chats/${encodeURIComponent(chat.id)}/events?after=${encodeURIComponent(after)}&limit=1000`);
      for (const event of page.events || []) onChatEvent(chat.id, event, true);
      if (!page.events || page.events.length < 1000) break;
      after = page.next_after;
    }
  } catch (_) {
    // the feed still brings new events
  }
  chat.loading = false;
  for (const event of chat.pending.splice(0)) onChatEvent(chat.id, event);
}

function chatActions(id) {
  const queueSelect = el("select", { "aria-label": "Transfer to queue", "data-test": "transfer-queue" },
    el("option", { value: "" }, "queue…"), queues.filter((q) => q.channel === "chat").map((q) => el("option", { value: q.id }, q.name)));
  const agentInput = el("input", { placeholder: "or agent id", "aria-label": "Transfer to agent", maxlength: 64, "data-test": "transfer-agent" });
  const outcome = el("select", { "aria-label": "Outcome", "data-test": "outcome" }, OUTCOMES.map((o) => el("option", { value: o }, o.replace(/_/g, " "))));
  const note = el("p", { class: "error", role: "alert" });
  const transfer = async () => {
    const body = agentInput.value.trim()
      ? { to: "agent", agent_id: agentInput.value.trim() }
      : queueSelect.value ? { to: "queue", queue_id: queueSelect.value } : null;
    if (!body) {
      note.textContent = "Pick a queue or type an agent id.";
      return;
    }
    try {
      await client.call("POST", `/api/v1/activities/${encodeURIComponent(id)}/transfer`, body);
      refresh();
    } catch (failure) {
      note.textContent = "Transfer refused: " + failure.message;
    }
  };
  const complete = async () => {
    try {
      await client.call("POST", `/api/v1/activities/${encodeURIComponent(id)}/complete`, { outcome: outcome.value });
      refresh();
    } catch (failure) {
      note.textContent = "Could not complete: " + failure.message;
    }
  };
  return el("div", { class: "chat-actions" },
    el("span", { class: "group" }, queueSelect, agentInput, el("button", { type: "button", class: "secondary", onclick: transfer, "data-test": "transfer" }, "Transfer")),
    el("span", { class: "group" }, outcome, el("button", { type: "button", onclick: complete, "data-test": "complete" }, "Complete")),
    note);
}

function send(chat, input) {
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  chat.outbox.send(chat.id, text);
}

function renderOwn(chat, item) {
  let bubble = chat.bubbles.get(item.id);
  if (!bubble) {
    bubble = el("li", { class: "message mine", dataset: { clientMsgId: item.id } }, el("span", { class: "text" }, item.text), el("span", { class: "state" }));
    chat.bubbles.set(item.id, bubble);
    chat.log.append(bubble);
    bubble.scrollIntoView({ block: "end" });
  }
  bubble.dataset.state = item.state;
  bubble.querySelector(".state").replaceChildren(item.state === "failed"
    ? el("button", { type: "button", class: "link", onclick: () => chat.outbox.retry(item.id) }, "failed, retry")
    : item.state);
}

/** One event of a chat, from its history or the feed; each seq is shown once. */
function onChatEvent(chatId, event, fromHistory = false) {
  const chat = chats.get(chatId);
  if (chat && chat.loading && !fromHistory) {
    chat.pending.push(event);
    return;
  }
  if (!chat || typeof event.seq !== "number" || event.seq <= chat.lastSeq) return;
  chat.lastSeq = event.seq;
  const mine = event.type === "message" && event.from && event.from.role === "agent" && event.from.agent_id === agent.agent_id;
  if (mine && event.client_msg_id && chat.bubbles.has(event.client_msg_id)) {
    chat.outbox.seen(event.client_msg_id, event.seq);
    chat.bubbles.get(event.client_msg_id).dataset.seq = event.seq;
    return;
  }
  let line;
  if (event.type === "message") {
    const who = event.from && event.from.role === "customer" ? "theirs" : "mine";
    line = el("li", { class: `message ${who}`, dataset: { seq: event.seq } }, el("span", { class: "text" }, event.text), el("time", {}, clock(event.at_ms)));
    if (event.client_msg_id && mine) chat.bubbles.set(event.client_msg_id, line);
    if (who === "theirs") chat.typing.hidden = true;
  } else {
    const text = {
      started: "Chat started",
      agent_joined: `${event.agent_name || event.agent_id} joined`,
      agent_left: "Agent left",
      transferred: event.to === "queue" ? `Transferred to ${event.queue_id}` : `Transferred to ${event.agent_id}`,
      ended: `Chat ended by ${event.by || "system"}`,
      rated: `Rated ${event.rating}/5`,
    }[event.type] || event.type;
    line = el("li", { class: "note", dataset: { seq: event.seq } }, text, " · ", clock(event.at_ms));
  }
  chat.log.append(line);
  line.scrollIntoView({ block: "end" });
  if (!fromHistory && event.type === "message" && !mine && !chat.panel.contains(document.activeElement)) {
    chat.unreadCount += 1;
    chat.unread.hidden = false;
    chat.unread.textContent = `${chat.unreadCount} new`;
  }
  if (event.type === "ended") chat.panel.classList.add("ended");
}

function markRead(chat) {
  chat.unreadCount = 0;
  chat.unread.hidden = true;
}

function showTyping(chat) {
  chat.typing.hidden = false;
  clearTimeout(chat.typingTimer);
  chat.typingTimer = setTimeout(() => (chat.typing.hidden = true), TYPING_SHOWN_MS);
}

function closeChat(id) {
  const chat = chats.get(id);
  if (!chat) return;
  chat.panel.remove();
  chats.delete(id);
}

function addCallback(activity) {
  const info = activity.callback || {};
  const outcome = el("select", { "aria-label": "Outcome" }, CALLBACK_OUTCOMES.map((o) => el("option", { value: o }, o.replace(/_/g, " "))));
  const note = el("p", { class: "error", role: "alert" });
  const card = el("article", { class: "callback-card", dataset: { activityId: activity.id } },
    el("strong", {}, info.name || "Customer"), " ",
    el("a", { href: `tel:${info.phone || ""}` }, info.phone || ""),
    el("p", {}, "Due ", info.due_at_ms ? new Date(info.due_at_ms).toLocaleString() : "now"),
    outcome,
    el("button", { type: "button", onclick: async () => {
      try {
        await client.call("POST", `/api/v1/activities/${encodeURIComponent(activity.id)}/complete`, { outcome: outcome.value });
        refresh();
      } catch (failure) {
        note.textContent = failure.message;
      }
    } }, "Done"),
    note);
  callbacks.set(activity.id, card);
  lists.callbacks.append(card);
}

function removeCallback(id) {
  const card = callbacks.get(id);
  if (card) card.remove();
  callbacks.delete(id);
}

function safeParse(text) {
  try {
    return text ? JSON.parse(text) : null;
  } catch (_) {
    return null;
  }
}
