// The customer chat widget: pre-chat form, queue position, chat with typing indicator, end,
// rating, transcript, callback request. Served at /chat and embeddable on another site:
//
//   <div id="parley-chat"></div>
//   <script type="module">
//     import { mount } from "https://parley.example.com/ui/widget.js";
//     mount(document.getElementById("parley-chat"), { node: "https://parley.example.com" });
//   </script>
//
// The embedding site's origin must be listed in the nodes' `web.allowed_origins`.

import { Client, Nodes, Outbox, Stream, ApiFailure, clock, connectionBanner, el, newId } from "./session.js";

/** How long a "typing…" indicator stays without a new one. */
const TYPING_SHOWN_MS = 4000;
/** Least time between two typing frames this widget sends. */
const TYPING_EVERY_MS = 2000;
const STORE_KEY = "parley.chat";

/**
 * Mounts the widget in `root`. Options: `node` (the base URL of a Parley node; default this
 * page's origin), `nodes` (several), `queue` (a queue id; default the first chat queue).
 */
export function mount(root, options = {}) {
  const bases = options.nodes || [options.node || location.origin];
  const widget = new Widget(root, new Nodes(bases), options);
  widget.start();
  return widget;
}

class Widget {
  constructor(root, nodes, options) {
    this.root = root;
    this.nodes = nodes;
    this.options = options;
    this.client = new Client(nodes);
    this.queues = [];
    this.chat = null;
    this.stream = null;
    this.outbox = null;
    this.bubbles = new Map();
    this.lastTypingSent = 0;
    this.typingTimer = null;
    root.classList.add("parley-widget");
    root.replaceChildren();
    this.setStatus = connectionBanner(root);
    this.client.onTrouble = (trouble) => this.setStatus(trouble ? "reconnecting" : "live");
    this.body = el("div", { class: "widget-body" });
    root.append(this.body);
  }

  async start() {
    await this.nodes.refresh();
    const saved = safeParse(sessionStorage.getItem(STORE_KEY));
    if (saved && saved.chat_id && saved.token) {
      this.resume(saved);
      return;
    }
    await this.loadQueues();
    this.showPreChat();
  }

  async loadQueues() {
    try {
      this.queues = (await this.client.call("GET", "/api/v1/queues")) || [];
    } catch (error) {
      this.queues = [];
      this.showError("The chat service cannot be reached: " + error.message);
    }
  }

  chatQueue() {
    const chats = this.queues.filter((q) => q.channel === "chat");
    return chats.find((q) => q.id === this.options.queue) || chats[0] || null;
  }

  callbackQueue() {
    return this.queues.find((q) => q.channel === "callback") || null;
  }

  showError(text) {
    this.body.replaceChildren(el("p", { class: "error", role: "alert" }, text));
  }

  showPreChat() {
    const queue = this.chatQueue();
    if (!queue) {
      this.showError("No chat queue is configured.");
      return;
    }
    if (!queue.open) {
      this.body.replaceChildren(
        el("h2", {}, queue.name),
        el("p", { class: "off-hours", "data-test": "off-hours" }, queue.off_hours_message),
        this.callbackForm(),
      );
      return;
    }
    const requestId = newId("chat");
    const error = el("p", { class: "error", role: "alert" });
    const form = el(
      "form",
      { class: "pre-chat", "data-test": "pre-chat" },
      el("h2", {}, "Chat with ", queue.name),
      el("label", {}, "Your name", el("input", { name: "name", required: true, maxlength: 100, autocomplete: "name" })),
      el("label", {}, "Email", el("input", { name: "email", type: "email", required: true, maxlength: 254, autocomplete: "email" })),
      el("label", {}, "How can we help?", el("textarea", { name: "question", maxlength: 500, rows: 3 })),
      error,
      el("button", { type: "submit" }, "Start chat"),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      form.querySelector("button").disabled = true;
      error.textContent = "";
      try {
        const answer = await this.client.call("POST", "/api/v1/chats", {
          request_id: requestId,
          queue_id: queue.id,
          customer: { name: String(data.get("name")).trim(), email: String(data.get("email")).trim() },
          question: String(data.get("question") || ""),
        });
        const saved = { chat_id: answer.chat_id, token: answer.token };
        sessionStorage.setItem(STORE_KEY, JSON.stringify(saved));
        this.resume(saved);
      } catch (failure) {
        form.querySelector("button").disabled = false;
        error.textContent = failure instanceof ApiFailure && failure.code === "off_hours"
          ? failure.message
          : "Could not start the chat: " + failure.message;
      }
    });
    const callback = this.callbackQueue();
    this.body.replaceChildren(form);
    if (callback) {
      this.body.append(
        el("details", { class: "callback" }, el("summary", {}, "Prefer a call back?"), this.callbackForm()),
      );
    }
  }

  callbackForm() {
    const queue = this.callbackQueue();
    if (!queue) return el("p", {}, "Please come back during opening hours.");
    const requestId = newId("cb");
    const note = el("p", { role: "status" });
    const form = el(
      "form",
      { class: "callback-form", "data-test": "callback-form" },
      el("label", {}, "Name", el("input", { name: "name", required: true, maxlength: 100 })),
      el("label", {}, "Phone (+ and digits)", el("input", { name: "phone", required: true, pattern: "\\+[0-9]{7,15}", inputmode: "tel" })),
      el("label", {}, "When (optional)", el("input", { name: "when", type: "datetime-local" })),
      note,
      el("button", { type: "submit" }, "Call me back"),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const when = String(data.get("when") || "");
      const body = { request_id: requestId, queue_id: queue.id, name: String(data.get("name")).trim(), phone: String(data.get("phone")).trim() };
      if (when) body.requested_at = new Date(when).toISOString();
      try {
        const answer = await this.client.call("POST", "/api/v1/callbacks", body);
        form.replaceChildren(el("p", { class: "done", "data-test": "callback-done" },
          "We will call you back around ", new Date(answer.due_at_ms).toLocaleString(), "."));
      } catch (failure) {
        note.textContent = "Could not request the call back: " + failure.message;
      }
    });
    return form;
  }

  resume(saved) {
    this.chat = saved;
    this.client.token = saved.token;
    this.outbox = new Outbox(this.client, (id) => `/api/v1/chats/${encodeURIComponent(id)}/messages`, (item) => this.renderOwn(item));
    this.renderChat();
    this.stream = new Stream(this.nodes, saved.token, {
      path: (cursor) => `/api/v1/chats/${encodeURIComponent(saved.chat_id)}/stream?after=${encodeURIComponent(cursor)}`,
      // A reload shows the whole chat again; reconnects resume from the last event shown.
      cursor: "0",
      cursorOf: (frame) => (frame.after !== undefined ? frame.after : null),
      onFrame: (frame) => this.onFrame(frame),
      onStatus: (status) => this.setStatus(status),
      onEnd: () => this.showError("This chat can no longer be opened."),
    });
    this.stream.start();
  }

  renderChat() {
    this.status = el("p", { class: "chat-status", "data-test": "chat-status", role: "status" }, "Waiting for an agent…");
    this.typing = el("p", { class: "typing", "data-test": "typing", hidden: true }, "The agent is typing…");
    this.log = el("ol", { class: "messages", "data-test": "messages", "aria-live": "polite" });
    this.input = el("textarea", { rows: 2, maxlength: 2000, "aria-label": "Message", "data-test": "composer" });
    const send = el("button", { type: "submit", "data-test": "send" }, "Send");
    const composer = el("form", { class: "composer" }, this.input, send);
    composer.addEventListener("submit", (event) => {
      event.preventDefault();
      this.sendMessage();
    });
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        this.sendMessage();
      }
    });
    this.input.addEventListener("input", () => this.sendTyping());
    this.actions = el(
      "div",
      { class: "chat-actions" },
      el("button", { type: "button", class: "secondary", "data-test": "end", onclick: () => this.end() }, "End chat"),
      el("button", { type: "button", class: "secondary", "data-test": "transcript", onclick: () => this.transcript() }, "Transcript"),
    );
    this.composer = composer;
    this.body.replaceChildren(this.status, this.log, this.typing, composer, this.actions);
  }

  sendMessage() {
    const text = this.input.value.trim();
    if (!text) return;
    this.input.value = "";
    this.outbox.send(this.chat.chat_id, text);
  }

  sendTyping() {
    const now = Date.now();
    if (now - this.lastTypingSent < TYPING_EVERY_MS) return;
    this.lastTypingSent = now;
    this.stream.send({ type: "typing" });
  }

  /** The customer's own message, from the outbox (sending / sent / failed). */
  renderOwn(item) {
    let bubble = this.bubbles.get(item.id);
    if (!bubble) {
      bubble = el("li", { class: "message mine", dataset: { clientMsgId: item.id } },
        el("span", { class: "text" }, item.text), el("span", { class: "state" }));
      this.bubbles.set(item.id, bubble);
      this.log.append(bubble);
      bubble.scrollIntoView({ block: "end" });
    }
    const state = bubble.querySelector(".state");
    bubble.dataset.state = item.state;
    state.replaceChildren(
      item.state === "failed"
        ? el("button", { type: "button", class: "link", onclick: () => this.outbox.retry(item.id) }, "failed, retry")
        : item.state,
    );
  }

  onFrame(frame) {
    if (frame.type === "queue_status") {
      this.status.textContent = `You are number ${frame.position} in line; about ${Math.max(1, Math.round(frame.estimated_wait_s / 60))} min.`;
      return;
    }
    if (frame.type === "typing") {
      if (frame.from && frame.from.role === "agent") this.showTyping();
      return;
    }
    if (frame.type === "error") return;
    this.onEvent(frame);
  }

  showTyping() {
    this.typing.hidden = false;
    clearTimeout(this.typingTimer);
    this.typingTimer = setTimeout(() => (this.typing.hidden = true), TYPING_SHOWN_MS);
  }

  onEvent(event) {
    switch (event.type) {
      case "started":
        if (event.question) this.addLine("mine", event.question, event, "question");
        break;
      case "message":
        if (event.from && event.from.role === "customer") {
          if (event.client_msg_id && this.bubbles.has(event.client_msg_id)) {
            this.outbox.seen(event.client_msg_id, event.seq);
            this.bubbles.get(event.client_msg_id).dataset.seq = event.seq;
          } else {
            const line = this.addLine("mine", event.text, event);
            if (event.client_msg_id) this.bubbles.set(event.client_msg_id, line);
          }
        } else {
          this.typing.hidden = true;
          this.addLine("theirs", event.text, event);
        }
        break;
      case "agent_joined":
        this.status.textContent = `${event.agent_name || "An agent"} joined the chat.`;
        this.addNote(`${event.agent_name || "An agent"} joined`, event);
        break;
      case "agent_left":
        this.addNote("The agent left the chat", event);
        break;
      case "transferred":
        this.status.textContent = "You are being transferred…";
        this.addNote("Transferred", event);
        break;
      case "ended":
        this.addNote("The chat has ended", event);
        this.ended();
        break;
      case "rated":
        break;
      default:
        break;
    }
  }

  addLine(kind, text, event, extra) {
    const line = el("li", { class: `message ${kind} ${extra || ""}`, dataset: { seq: event.seq } },
      el("span", { class: "text" }, text), el("time", {}, clock(event.at_ms)));
    this.log.append(line);
    line.scrollIntoView({ block: "end" });
    return line;
  }

  addNote(text, event) {
    this.log.append(el("li", { class: "note", dataset: { seq: event.seq } }, text, " · ", clock(event.at_ms)));
  }

  async end() {
    try {
      await this.client.call("POST", `/api/v1/chats/${encodeURIComponent(this.chat.chat_id)}/end`);
    } catch (failure) {
      this.addNote("Could not end the chat: " + failure.message, { at_ms: Date.now() });
    }
  }

  ended() {
    if (this.ratingShown) return;
    this.ratingShown = true;
    this.composer.hidden = true;
    this.status.textContent = "The chat has ended.";
    const comment = el("textarea", { rows: 2, maxlength: 500, "aria-label": "Comment" });
    const thanks = el("p", { role: "status" });
    const stars = [1, 2, 3, 4, 5].map((n) =>
      el("button", { type: "button", class: "star", "aria-label": `${n} of 5`, "data-test": `rate-${n}`, onclick: () => rate(n) }, "★".repeat(n)));
    const rate = async (rating) => {
      try {
        await this.client.call("POST", `/api/v1/chats/${encodeURIComponent(this.chat.chat_id)}/survey`, {
          rating,
          comment: comment.value.trim() || undefined,
        });
        thanks.textContent = "Thank you for your rating.";
        thanks.dataset.test = "rated";
      } catch (failure) {
        thanks.textContent = "Could not send the rating: " + failure.message;
      }
    };
    this.actions.append(
      el("div", { class: "survey", "data-test": "survey" }, el("p", {}, "How did we do?"), el("div", { class: "stars" }, stars), comment, thanks),
      el("button", { type: "button", class: "secondary", onclick: () => this.newChat() }, "New chat"),
    );
  }

  async transcript() {
    try {
      const response = await this.client.call("GET",
        `/api/v1/chats/${encodeURIComponent(this.chat.chat_id)}/transcript?format=text`, undefined, { raw: true });
      const blob = await response.blob();
      const link = el("a", { href: URL.createObjectURL(blob), download: `chat-${this.chat.chat_id}.txt` });
      document.body.append(link);
      link.click();
      link.remove();
    } catch (failure) {
      this.addNote("Could not download the transcript: " + failure.message, { at_ms: Date.now() });
    }
  }

  async newChat() {
    if (this.stream) this.stream.stop();
    sessionStorage.removeItem(STORE_KEY);
    this.chat = null;
    this.bubbles.clear();
    this.ratingShown = false;
    this.client.token = null;
    await this.loadQueues();
    this.showPreChat();
  }
}

function safeParse(text) {
  try {
    return text ? JSON.parse(text) : null;
  } catch (_) {
    return null;
  }
}
