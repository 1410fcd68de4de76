// The supervisor wallboard: queues and agents live from the supervisor stream, and the
// cluster (members, sites, leader, health, island status) from the cluster view.

import { Client, Stream, connectionBanner, el, pageNodes } from "./session.js";
import { adminToken, askAdminToken } from "./admin.js";

/** How often the cluster panel is refreshed. */
const CLUSTER_EVERY_MS = 2000;

const root = document.getElementById("wallboard");
const nodes = pageNodes();
const setStatus = connectionBanner(document.body);

start();

async function start() {
  await nodes.refresh();
  const token = adminToken();
  if (!token) {
    askAdminToken(root, "Wallboard", start);
    return;
  }
  const client = new Client(nodes, token);
  const queues = el("table", { class: "grid", "data-test": "queues" });
  const agents = el("table", { class: "grid", "data-test": "agents" });
  const cluster = el("table", { class: "grid", "data-test": "cluster" });
  const updated = el("p", { class: "muted", "data-test": "updated" });
  root.replaceChildren(
    el("h1", {}, "Wallboard"), updated,
    el("h2", {}, "Queues"), queues,
    el("h2", {}, "Agents"), agents,
    el("h2", {}, "Cluster"), cluster,
  );
  const stream = new Stream(nodes, token, {
    path: () => "/api/v1/supervisor/stream",
    cursorOf: () => null,
    onFrame: (frame) => {
      if (frame.type !== "snapshot") return;
      renderQueues(queues, frame.queues || []);
      renderAgents(agents, frame.agents || []);
      updated.textContent = `Live · applied index ${frame.applied_index ?? "–"} · ${new Date().toLocaleTimeString()}`;
      updated.dataset.appliedIndex = frame.applied_index ?? "";
    },
    onStatus: setStatus,
    finalCodes: [],
  });
  stream.start();
  const refreshCluster = async () => {
    try {
      renderCluster(cluster, await client.call("GET", "/api/v1/cluster", undefined, { giveUpMs: CLUSTER_EVERY_MS }));
    } catch (_) {
      cluster.dataset.stale = "true";
    }
    setTimeout(refreshCluster, CLUSTER_EVERY_MS);
  };
  refreshCluster();
}

function row(cells, attributes = {}) {
  return el("tr", attributes, cells.map((c) => el("td", {}, c)));
}

function head(names) {
  return el("thead", {}, el("tr", {}, names.map((n) => el("th", { scope: "col" }, n))));
}

function waitFor(ms) {
  if (!ms) return "–";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 120 ? `${s} s` : `${Math.round(s / 60)} min`;
}

function renderQueues(table, queues) {
  table.replaceChildren(
    head(["Queue", "Channel", "Waiting", "Oldest wait", "Offered", "Assigned", "Agents ready", "Est. wait"]),
    el("tbody", {}, queues.map((q) => row([
      q.name, q.channel, q.waiting, waitFor(q.oldest_enqueued_at_ms), q.offered, q.assigned, q.agents_ready,
      `${Math.round(q.estimated_wait_s / 60)} min`,
    ], { dataset: { queueId: q.queue_id, waiting: q.waiting, offered: q.offered, assigned: q.assigned, agentsReady: q.agents_ready } }))),
  );
}

function renderAgents(table, agents) {
  const state = (a) => {
    if (!a.logged_in) return "signed out";
    if (!a.reachable) return "unreachable";
    const ready = Object.entries(a.ready || {}).filter(([, r]) => r).map(([c]) => c);
    return ready.length ? `ready: ${ready.join(", ")}` : `not ready${a.not_ready_reason ? ` (${a.not_ready_reason})` : ""}`;
  };
  const load = (a) => Object.entries(a.load || {}).map(([c, n]) => `${c} ${n}/${(a.limits || {})[c] ?? "–"}`).join(", ") || "–";
  table.replaceChildren(
    head(["Agent", "State", "Load", "Node"]),
    el("tbody", {}, agents.map((a) => row([a.name, state(a), load(a), a.node ?? "–"],
      { dataset: { agentId: a.agent_id, loggedIn: a.logged_in, load: JSON.stringify(a.load || {}) } }))),
  );
}

function renderCluster(table, view) {
  table.dataset.stale = "false";
  table.replaceChildren(
    head(["Node", "Site", "Role", "Reachable", "Island", "HTTP"]),
    el("tbody", {}, (view.members || []).map((m) => row([
      m.id, m.site, m.role, m.reachable === false ? "no" : m.reachable ? "yes" : "–",
      m.island ? "island" : "–", m.http_addr],
      { dataset: { nodeId: m.id } }))),
    el("caption", {}, `Leader: ${view.leader ?? "none"} · term ${view.term} · seen from node ${view.node_id}`,
      view.island ? ` · node ${view.node_id} is an ISLAND (epoch ${view.island_epoch})` : ""),
  );
}
