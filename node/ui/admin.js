// The admin pages: departments, skills, queues with business hours, and agents. Every change
// is a PUT or DELETE of the admin API, replicated like any write; the page shows the directory
// the node answers with. Also holds the admin credential prompt the wallboard uses.

import { Client, connectionBanner, el, pageNodes } from "./session.js";

const STORE_KEY = "parley.admin";
const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/** The admin credential this tab holds, if any. */
export function adminToken() {
  return sessionStorage.getItem(STORE_KEY);
}

/** Asks for the admin credential (the node config's admin_token), then calls `then`. */
export function askAdminToken(root, title, then) {
  const form = el("form", { class: "login card", "data-test": "admin-login" },
    el("h1", {}, title),
    el("label", {}, "Admin token", el("input", { name: "token", type: "password", required: true, autocomplete: "off" })),
    el("button", { type: "submit" }, "Open"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(STORE_KEY, String(new FormData(form).get("token")).trim());
    then();
  });
  root.replaceChildren(form);
}

const root = document.getElementById("admin");
if (root) startAdmin();

async function startAdmin() {
  const nodes = pageNodes();
  await nodes.refresh();
  const token = adminToken();
  if (!token) {
    askAdminToken(root, "Admin", startAdmin);
    return;
  }
  const client = new Client(nodes, token);
  const banner = connectionBanner(document.body);
  client.onTrouble = (trouble) => banner(trouble ? "reconnecting" : "live");
  const note = el("p", { role: "status", class: "muted", "data-test": "admin-note" });
  const lists = el("div", { class: "directory" });
  root.replaceChildren(el("h1", {}, "Admin"), note, lists);

  const say = (text, error = false) => {
    note.textContent = text;
    note.className = error ? "error" : "muted";
  };
  const change = async (method, path, body) => {
    try {
      render(await client.call(method, path, body));
      say("Saved.");
    } catch (failure) {
      if (failure.status === 401) sessionStorage.removeItem(STORE_KEY);
      say(`${failure.code}: ${failure.message}`, true);
    }
  };
  const remove = (kind, id) => el("button", { type: "button", class: "secondary", onclick: () => {
    if (confirm(`Remove ${kind.slice(0, -1)} ${id}?`)) change("DELETE", `/api/v1/admin/${kind}/${encodeURIComponent(id)}`);
  } }, "Remove");

  const render = (directory) => {
    const departments = directory.departments || [];
    const skills = directory.skills || [];
    lists.replaceChildren(
      section("Departments", departments.map((d) => [d.id, d.name, remove("departments", d.id)]), ["Id", "Name", ""],
        nameForm("department", (id, name) => change("PUT", `/api/v1/admin/departments/${encodeURIComponent(id)}`, { name }))),
      section("Skills", skills.map((s) => [s.id, s.name, remove("skills", s.id)]), ["Id", "Name", ""],
        nameForm("skill", (id, name) => change("PUT", `/api/v1/admin/skills/${encodeURIComponent(id)}`, { name }))),
      section("Queues", (directory.queues || []).map((q) => [q.id, q.name, q.channel, (q.skills || []).join(", "), hoursText(q.business_hours), remove("queues", q.id)]),
        ["Id", "Name", "Channel", "Skills", "Hours", ""], queueForm(departments, (id, body) => change("PUT", `/api/v1/admin/queues/${encodeURIComponent(id)}`, body))),
      section("Agents", (directory.agents || []).map((a) => [a.id, a.name, (a.skills || []).join(", "), JSON.stringify(a.limits || {}), remove("agents", a.id)]),
        ["Id", "Name", "Skills", "Limits", ""], agentForm((id, body) => change("PUT", `/api/v1/admin/agents/${encodeURIComponent(id)}`, body))),
    );
  };

  try {
    render(await client.call("GET", "/api/v1/admin/directory"));
  } catch (failure) {
    if (failure.status === 401 || failure.status === 403) {
      sessionStorage.removeItem(STORE_KEY);
      askAdminToken(root, "Admin", startAdmin);
      return;
    }
    say(failure.message, true);
  }
}

function section(title, rows, columns, form) {
  return el("section", { class: "admin-section", "data-test": `section-${title.toLowerCase()}` },
    el("h2", {}, title),
    el("table", { class: "grid" },
      el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col" }, c)))),
      el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c)))))),
    form);
}

function hoursText(hours) {
  if (!hours) return "always open";
  if (!hours.intervals || hours.intervals.length === 0) return "always closed";
  return hours.intervals.map((i) => `${i.days.join(",")} ${i.open}–${i.close}`).join("; ") + ` (${hours.time_zone})`;
}

function field(label, input) {
  return el("label", {}, label, input);
}

function nameForm(kind, save) {
  const form = el("form", { class: "inline-form", "data-test": `add-${kind}` },
    field("Id", el("input", { name: "id", required: true, pattern: "[A-Za-z0-9._\\-]{1,64}" })),
    field("Name", el("input", { name: "name", required: true, maxlength: 50 })),
    el("button", { type: "submit" }, `Save ${kind}`));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    save(String(data.get("id")).trim(), String(data.get("name")).trim());
  });
  return form;
}

function list(value) {
  return String(value || "").split(",").map((s) => s.trim()).filter(Boolean);
}

function queueForm(departments, save) {
  const form = el("form", { class: "inline-form", "data-test": "add-queue" },
    field("Id", el("input", { name: "id", required: true, pattern: "[A-Za-z0-9._\\-]{1,64}" })),
    field("Name", el("input", { name: "name", required: true, maxlength: 50 })),
    field("Department", el("select", { name: "department" }, el("option", { value: "" }, "none"), departments.map((d) => el("option", { value: d.id }, d.name)))),
    field("Channel", el("select", { name: "channel" }, ["chat", "callback", "email"].map((c) => el("option", { value: c }, c)))),
    field("Skills (comma-separated)", el("input", { name: "skills" })),
    field("Offer timeout (s)", el("input", { name: "offer_timeout_s", type: "number", min: 1, max: 3600, value: 30 })),
    field("Time zone (blank: always open)", el("input", { name: "time_zone", placeholder: "Europe/Paris" })),
    field("Open days", el("span", { class: "days" }, DAYS.map((d) => el("label", {}, el("input", { type: "checkbox", name: `day-${d}`, checked: !["sat", "sun"].includes(d) }), d)))),
    field("Opens", el("input", { name: "open", type: "time", value: "09:00" })),
    field("Closes", el("input", { name: "close", type: "time", value: "18:00" })),
    field("Off-hours message", el("input", { name: "off_hours_message", maxlength: 500 })),
    el("button", { type: "submit" }, "Save queue"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = {
      name: String(data.get("name")).trim(),
      channel: String(data.get("channel")),
      skills: list(data.get("skills")),
      offer_timeout_ms: 1000 * Number(data.get("offer_timeout_s") || 30),
    };
    if (data.get("department")) body.department = String(data.get("department"));
    if (data.get("off_hours_message")) body.off_hours_message = String(data.get("off_hours_message"));
    const zone = String(data.get("time_zone") || "").trim();
    if (zone) {
      body.business_hours = {
        time_zone: zone,
        intervals: [{ days: DAYS.filter((d) => data.get(`day-${d}`)), open: String(data.get("open")), close: String(data.get("close")) }],
      };
    }
    save(String(data.get("id")).trim(), body);
  });
  return form;
}

function agentForm(save) {
  const form = el("form", { class: "inline-form", "data-test": "add-agent" },
    field("Id", el("input", { name: "id", required: true, pattern: "[A-Za-z0-9._\\-]{1,64}" })),
    field("Name", el("input", { name: "name", required: true, maxlength: 50 })),
    field("Skills (comma-separated)", el("input", { name: "skills" })),
    field("Chats at once", el("input", { name: "chat", type: "number", min: 0, max: 20, value: 3 })),
    field("Callbacks at once", el("input", { name: "callback", type: "number", min: 0, max: 20, value: 1 })),
    field("Password (new agents; blank keeps it)", el("input", { name: "password", type: "password", autocomplete: "new-password" })),
    el("button", { type: "submit" }, "Save agent"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = {
      name: String(data.get("name")).trim(),
      skills: list(data.get("skills")),
      limits: { chat: Number(data.get("chat")), callback: Number(data.get("callback")) },
    };
    if (data.get("password")) body.password = String(data.get("password"));
    save(String(data.get("id")).trim(), body);
  });
  return form;
}
