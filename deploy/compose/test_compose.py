#!/usr/bin/env python3
"""The compose deployment, end to end, on this Docker host (deploy/compose/test.sh runs it).

1. Up: the five nodes of docker-compose.yml (three sites, 2 + 2 + 1) from the image, with
   certificates and secrets from setup.sh; every node ready, one leader, Docker's health check
   (`parley probe`) healthy; the deployment rules checked on what Docker runs (non-root,
   SIGTERM, a stop timeout above drain + grace, HTTP on 127.0.0.1 only, internal networks, the
   data volume).
2. Site cut: the chaos runner's customers (target mode, on every node of every site) and one
   agent per site (signing in on its own site's nodes) work while site-a is cut off from the
   WAN with packets dropped; site-a's nodes must report an island and take writes into their
   journal, the other sites keep a leader; then heal, the journal must merge, and the runner's
   oracle must find nothing lost or duplicated, every node validated, digests equal; every
   message an agent had acknowledged must be in its chat exactly once on every node.
3. Rolling upgrade under load: the image re-tagged, each container recreated from it one at a
   time (SIGTERM drain within the stop timeout), waiting for /readyz and one leader between,
   while the runner's customers and the agents work; the same checks after.
4. The SRE target file (chaos-target.toml as setup.sh renders it): the runner's own faults
   through its commands (kill, start, pause, resume, restart, partition, heal); the same checks.

Everything it starts is removed at the end (containers, networks, volumes, state, the tag).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
NODES = [1, 2, 3, 4, 5]
SITES = {"site-a": [1, 2], "site-b": [3, 4], "site-c": [5]}
AGENTS = {"agent-a": "site-a", "agent-b": "site-b", "agent-c": "site-c"}
PASSWORD = "parley-demo"
HTTP_TIMEOUT_S = 5

LINES = []


def say(message):
    """Prints a line of the report (and keeps it for --report)."""
    line = f"[{time.strftime('%H:%M:%S')}] {message}"
    print(line, flush=True)
    LINES.append(line)


class Failed(Exception):
    """A check that did not hold."""


def check(condition, message):
    if not condition:
        raise Failed(message)


def http(method, url, body=None, token=None, timeout=HTTP_TIMEOUT_S):
    """(status, parsed JSON or text); status 0 when the node could not be reached in time."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if body is not None:
        request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_for(what, predicate, timeout_s, interval_s=0.5):
    """Polls predicate() until it returns a truthy value; fails after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failed(f"{what}: not within {timeout_s} s")
        time.sleep(interval_s)


class Cluster:
    """The compose project under test."""

    def __init__(self, image, project, state, ports):
        self.image = image
        self.project = project
        self.state = state
        self.ports = ports
        self.env = dict(os.environ, COMPOSE_PROJECT_NAME=project, PARLEY_IMAGE=image,
                        PARLEY_STATE=state)
        for n, port in zip(NODES, ports):
            self.env[f"PARLEY_PORT_{n}"] = str(port)

    def url(self, n):
        return f"http://127.0.0.1:{self.ports[n - 1]}"

    def compose(self, *args, env=None, timeout=300):
        command = ["docker-compose", "-f", os.path.join(HERE, "docker-compose.yml"), *args]
        done = subprocess.run(command, env=env or self.env, capture_output=True, text=True,
                              timeout=timeout)
        if done.returncode != 0:
            raise Failed(f"{' '.join(command)}: {done.stderr.strip()[-2000:]}")
        return done.stdout

    def script(self, *args, timeout=120):
        done = subprocess.run(list(args), env=self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=REPO)
        if done.returncode != 0:
            raise Failed(f"{' '.join(args)}: {done.stderr.strip()[-2000:]}")
        return done.stdout.strip()

    def container(self, n):
        return self.script(os.path.join(HERE, "node.sh"), "container", str(n))

    def inspect(self, n):
        return json.loads(self.script("docker", "inspect", self.container(n)))[0]

    def view(self, n):
        status, body = http("GET", f"{self.url(n)}/api/v1/cluster")
        return body if status == 200 and isinstance(body, dict) else None

    def ready(self, n):
        return http("GET", f"{self.url(n)}/readyz", timeout=2)[0] == 200

    def leader(self, nodes=NODES):
        """The leader every node of `nodes` names, if they all name the same one."""
        leaders = set()
        for n in nodes:
            view = self.view(n)
            if view is None or view.get("leader") is None:
                return None
            leaders.add(view["leader"])
        return leaders.pop() if len(leaders) == 1 else None


class Agent(threading.Thread):
    """One agent of one site: signs in through its site's nodes, gets ready, accepts what it is
    offered and answers each chat it holds every 2 s (40 times at most), retrying every write
    with the same client id until it is acknowledged (or refused for good)."""

    def __init__(self, cluster, agent_id, site, tag):
        super().__init__(daemon=True)
        self.cluster, self.agent_id, self.tag = cluster, agent_id, tag
        self.nodes = SITES[site]
        self.stop = threading.Event()
        self.token = None
        self.acked = {}  # (chat_id, client_msg_id) -> (seq, island)
        self.accepted = set()
        self.sent = {}  # chat_id -> messages acknowledged in it
        self.refusals = {}  # error code -> count
        self.turn = 0

    def node_url(self):
        self.turn += 1
        return self.cluster.url(self.nodes[self.turn % len(self.nodes)])

    def refused(self, status, body):
        code = body.get("error", {}).get("code") if isinstance(body, dict) else None
        key = f"{status} {code or ''}".strip()
        self.refusals[key] = self.refusals.get(key, 0) + 1

    def login(self):
        status, body = http("POST", f"{self.node_url()}/api/v1/agents/login",
                            {"agent_id": self.agent_id, "password": PASSWORD})
        if status != 200:
            self.refused(status, body)
            return
        token = body["token"]
        status, body = http("PUT", f"{self.node_url()}/api/v1/agents/me/availability",
                            {"channels": {"chat": True}}, token)
        if status == 200:
            self.token = token
        else:
            self.refused(status, body)

    def post(self, chat_id, client_msg_id):
        """Posts until acknowledged or refused for good; False when the chat moved on."""
        while not self.stop.is_set():
            status, body = http("POST", f"{self.node_url()}/api/v1/chats/{chat_id}/messages",
                                {"client_msg_id": client_msg_id,
                                 "text": f"{self.agent_id} answers ({client_msg_id})"},
                                self.token)
            if status in (200, 201):
                self.acked[(chat_id, client_msg_id)] = (body.get("seq"), bool(body.get("island")))
                return True
            self.refused(status, body)
            if status in (401, 403, 404, 409):
                return False  # not ours any more (requeued, ended) or the session ended
            time.sleep(0.3)
        return False

    def run(self):
        while not self.stop.is_set():
            if self.token is None:
                self.login()
                if self.token is None:
                    time.sleep(0.5)
                    continue
            status, console = http("GET", f"{self.node_url()}/api/v1/agents/me/activities",
                                   token=self.token)
            if status == 401:
                self.token = None
                continue
            if status != 200:
                self.refused(status, console)
                time.sleep(0.5)
                continue
            for activity in console.get("activities", []):
                state = activity.get("status", {})
                chat_id = activity["id"]
                if state.get("state") == "offered" and state.get("agent_id") == self.agent_id:
                    status, body = http("POST",
                                        f"{self.node_url()}/api/v1/activities/{chat_id}/accept",
                                        token=self.token)
                    if status == 200:
                        self.accepted.add(chat_id)
                    else:
                        self.refused(status, body)
                elif state.get("state") == "assigned" and self.sent.get(chat_id, 0) < 40:
                    k = self.sent.get(chat_id, 0)
                    if self.post(chat_id, f"{self.tag}-{self.agent_id}-{k}"):
                        self.sent[chat_id] = k + 1
                    else:
                        self.sent[chat_id] = 40  # stop answering a chat that moved on
            time.sleep(2)


def start_agents(cluster, tag):
    agents = [Agent(cluster, agent_id, site, tag) for agent_id, site in AGENTS.items()]
    for agent in agents:
        agent.start()
    return agents


def chat_messages(url, chat_id, token):
    """Every message event of the chat as the node at `url` has it, or None if the token does
    not open it there."""
    events = []
    while True:
        status, body = http("GET", f"{url}/api/v1/chats/{chat_id}/events"
                                   f"?after={len(events)}&limit=1000", token=token)
        if status != 200:
            return None
        page = body.get("events", [])
        if not page:
            return [e for e in events if e.get("type") == "message"]
        events.extend(page)


def check_agents(cluster, agents):
    """Stops the agents; every message one had acknowledged is in its chat exactly once on
    every node (read with the token of whichever agent holds the chat now)."""
    for agent in agents:
        agent.stop.set()
    for agent in agents:
        agent.join(timeout=30)
    tokens = [a.token for a in agents if a.token]
    checked, unreadable = 0, 0
    for agent in agents:
        check(agent.acked, f"{agent.agent_id} had no message acknowledged "
                           f"(refusals: {agent.refusals})")
        by_chat = {}
        for (chat_id, client_msg_id), (seq, island) in agent.acked.items():
            by_chat.setdefault(chat_id, []).append((client_msg_id, seq, island))
        for chat_id, messages in by_chat.items():
            for n in NODES:
                def events():
                    for token in tokens:
                        found = chat_messages(cluster.url(n), chat_id, token)
                        if found is not None:
                            if all(any(e.get("client_msg_id") == m for e in found)
                                   for m, _, _ in messages):
                                return found
                            return None  # a lagging node: ask again
                    return "unreadable"
                try:
                    found = wait_for(f"node {n}: {agent.agent_id}'s messages in chat {chat_id}",
                                     events, 20)
                except Failed:
                    raise Failed(f"node {n}: chat {chat_id} lacks a message {agent.agent_id} "
                                 f"had acknowledged: {messages}")
                if found == "unreadable":
                    unreadable += 1
                    continue
                for client_msg_id, seq, island in messages:
                    copies = [e for e in found if e.get("client_msg_id") == client_msg_id]
                    check(len(copies) == 1, f"node {n}: chat {chat_id}: {client_msg_id} appears "
                                            f"{len(copies)} times")
                    check(island or copies[0].get("seq") == seq,
                          f"node {n}: chat {chat_id}: {client_msg_id} acknowledged at seq {seq}, "
                          f"stored at {copies[0].get('seq')}")
                    checked += 1
    summary = ", ".join(
        f"{a.agent_id}: {len(a.accepted)} accepted, {len(a.acked)} messages acknowledged, "
        f"refused {a.refusals or 'never'}" for a in agents)
    say(f"agents: {summary}")
    say(f"agents: {checked} acknowledged messages found exactly once at their seq (node by "
        f"node); {unreadable} chat reads skipped (chat no longer held by any agent)")


class Runner:
    """The chaos runner in target mode, in the background."""

    def __init__(self, chaos, cluster, target, seed, duration_s):
        self.started = time.monotonic()
        self.duration_s = duration_s
        self.out = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [chaos, "--live", "--target", target, "--duration-s", str(duration_s),
             "--seed", str(seed)],
            cwd=REPO, env=cluster.env, stdout=self.out, stderr=subprocess.STDOUT, text=True)

    def traffic_left_s(self):
        return self.duration_s - (time.monotonic() - self.started)

    def finish(self, what):
        """Waits for the runner; its oracle must have found nothing."""
        try:
            code = self.process.wait(timeout=self.duration_s + 300)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise Failed(f"{what}: the chaos runner did not finish")
        self.out.seek(0)
        output = self.out.read()
        for line in output.splitlines():
            if line.strip() and "INFO" not in line and "WARN" not in line:
                say(f"  runner: {line}")
        rows = re.findall(r"^\| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) s \|$",
                          output, re.MULTILINE)
        check(code == 0 and rows, f"{what}: the chaos runner failed (exit {code}):\n"
                                  f"{output[-4000:]}")
        nodes, faults, writes, validated, violations, _ = map(int, rows[-1])
        check(violations == 0, f"{what}: {violations} violations")
        check(writes > 0, f"{what}: no acknowledged write was checked")
        check(validated == len(NODES), f"{what}: {validated} of {len(NODES)} nodes validated "
                                       f"(State::validate, digests)")
        check("VIOLATED" not in output, f"{what}: violations reported")
        say(f"{what}: oracle: {writes} acknowledged customer writes checked on {nodes} nodes, "
            f"{validated} nodes validated with equal digests, {faults} runner faults, "
            f"0 violations")
        return faults


def traffic_target(cluster, path):
    """The runner's target file without fault commands: the test makes the faults itself."""
    rendered = tomllib.load(open(os.path.join(cluster.state, "chaos-target.toml"), "rb"))
    with open(path, "w") as out:
        out.write(f'admin_token = "{rendered["admin_token"]}"\nqueue = "{rendered["queue"]}"\n')
        for node in rendered["nodes"]:
            out.write(f'\n[[nodes]]\nid = {node["id"]}\nurl = "{node["url"]}"\n')


def duration_s(text):
    match = re.fullmatch(r"(\d+)(ms|s|m)", text)
    check(match, f"unexpected duration {text!r} in node.toml")
    value, unit = int(match.group(1)), match.group(2)
    return value / 1000 if unit == "ms" else value * 60 if unit == "m" else value


def phase_up(cluster):
    size = int(subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", cluster.image],
                              capture_output=True, text=True, check=True, timeout=60).stdout)
    say(f"image {cluster.image}: {size / 1e6:.1f} MB")
    started = time.monotonic()
    cluster.script(os.path.join(HERE, "setup.sh"), timeout=300)
    cluster.compose("up", "-d")
    for n in NODES:
        wait_for(f"node {n} /readyz", lambda n=n: cluster.ready(n), 180)
    leader = wait_for("one leader named by every node", cluster.leader, 60)
    say(f"up: 5 nodes ready, leader {leader}, in {time.monotonic() - started:.0f} s")

    config = tomllib.load(open(os.path.join(HERE, "node.toml"), "rb"))
    timeouts = config.get("timeouts", {})
    needed = duration_s(timeouts.get("drain_wait", "2s")) + 3 + \
        duration_s(timeouts.get("shutdown_grace", "5s")) + 2
    for n in NODES:
        info = cluster.inspect(n)
        cfg, host = info["Config"], info["HostConfig"]
        user = cfg.get("User", "")
        check(user and user.split(":")[0] not in ("0", "root"), f"node {n} runs as {user!r}")
        with open(f"/proc/{info['State']['Pid']}/status") as status:
            uid = next(line.split()[1] for line in status if line.startswith("Uid:"))
        check(uid == "10001", f"node {n}'s process runs as uid {uid}, not 10001")
        check(cfg.get("StopSignal") == "SIGTERM", f"node {n}: stop signal {cfg.get('StopSignal')}")
        stop_timeout = cfg.get("StopTimeout")
        check(stop_timeout is not None and stop_timeout > needed,
              f"node {n}: stop timeout {stop_timeout} s, not above drain + handover + grace "
              f"({needed:.0f} s)")
        for bindings in (host.get("PortBindings") or {}).values():
            for binding in bindings:
                check(binding.get("HostIp") == "127.0.0.1",
                      f"node {n} publishes on {binding.get('HostIp')!r}, not 127.0.0.1")
        check(any(m.get("Destination") == "/var/lib/parley" and m.get("Type") == "volume"
                  for m in info["Mounts"]), f"node {n}: no volume at /var/lib/parley")
        check(host.get("ReadonlyRootfs") is True, f"node {n}: the root filesystem is writable")
        networks = info["NetworkSettings"]["Networks"]
        for name in networks:
            net = json.loads(cluster.script("docker", "network", "inspect", name))[0]
            if name.endswith("_edge"):
                check(net["Options"].get("com.docker.network.bridge.enable_icc") == "false",
                      f"{name}: containers could talk over the edge network")
            else:
                check(net["Internal"], f"node {n}: network {name} is not internal")
    say(f"up: every node non-root (uid 10001), read-only root, SIGTERM with stop timeout "
        f"{stop_timeout} s > {needed:.0f} s (drain + handover + grace + 2 s), HTTP on "
        f"127.0.0.1 only, data on a volume, site and WAN networks internal")

    def healthy():
        return all(cluster.inspect(n)["State"].get("Health", {}).get("Status") == "healthy"
                   for n in NODES)
    wait_for("Docker's health check (parley probe) healthy on every node", healthy, 90, 2)
    probe = subprocess.run(["docker", "exec", cluster.container(1), "/usr/local/bin/parley",
                            "probe", "--url", "http://127.0.0.1:1", "--timeout", "1s"],
                           capture_output=True, text=True, timeout=30)
    check(probe.returncode == 1 and "not ready" in probe.stderr,
          f"parley probe of a closed port: exit {probe.returncode}, {probe.stderr.strip()}")
    say("up: Docker health check `parley probe` healthy on every node; a probe of a closed "
        f"port exits 1: {probe.stderr.strip()}")


def phase_cut(cluster, chaos, target):
    runner = Runner(chaos, cluster, target, seed=1, duration_s=100)
    agents = start_agents(cluster, "cut")
    time.sleep(15)
    cut, others = SITES["site-a"], SITES["site-b"] + SITES["site-c"]
    cut_at = time.monotonic()
    cluster.script(os.path.join(HERE, "partition.sh"), "cut", "site-a")
    say(f"cut: site-a (nodes {cut}) cut off from the WAN, packets dropped")

    def islands():
        views = [cluster.view(n) for n in cut]
        return views if all(v and v.get("island") for v in views) else None
    views = wait_for("site-a's nodes report island in /api/v1/cluster", islands, 60)
    keepers = {v.get("island_keeper") for v in views}
    say(f"cut: nodes {cut} are an island after {time.monotonic() - cut_at:.1f} s "
        f"(island_epoch {[v.get('island_epoch') for v in views]}, keeper {keepers})")
    leader = wait_for("a leader on the quorum side", lambda: cluster.leader(others), 30)
    check(leader in others, f"the quorum side names leader {leader}")

    def quorum_side_sees_the_cut():
        for n in others:
            view = cluster.view(n)
            if not view or view.get("island"):
                return None
            lost = {m["id"] for m in view["members"] if m.get("reachable") is False}
            if not set(cut) <= lost:
                return None
        return True
    wait_for("the quorum side, no island, sees site-a's nodes unreachable",
             quorum_side_sees_the_cut, 30)
    say(f"cut: the quorum side (nodes {others}) has leader {leader} and sees nodes {cut} "
        f"unreachable")

    def journal():
        taken = sum((cluster.view(n) or {}).get("island_journal_entries", 0) for n in cut)
        return taken or None
    taken = wait_for("writes taken into site-a's island journal", journal, 30)
    time.sleep(10)
    cluster.script(os.path.join(HERE, "partition.sh"), "heal")
    healed_at = time.monotonic()
    say(f"cut: healed after {healed_at - cut_at:.0f} s (the island journal held writes: "
        f"{taken} when first read)")

    def merged():
        views = [cluster.view(n) for n in cut]
        if not all(v and not v.get("island") and v.get("island_journal_entries") == 0
                   for v in views):
            return None
        return sum(v.get("island_merged_writes", 0) for v in views) or None
    merged_writes = wait_for("site-a's journal merged", merged, 60)
    refused = sum(cluster.view(n).get("island_merge_refused", 0) for n in cut)
    check(refused == 0, f"{refused} island writes refused at merge")
    say(f"cut: merged {merged_writes} island writes {time.monotonic() - healed_at:.1f} s after "
        f"the heal, none refused")
    wait_for("every node at one leader", cluster.leader, 60)
    check_agents_before = max(0.0, runner.traffic_left_s() - 20)
    time.sleep(check_agents_before)
    check_agents(cluster, agents)
    runner.finish("cut")


def phase_upgrade(cluster, chaos, target):
    upgraded = cluster.image.rsplit(":", 1)[0] + ":upgrade-test"
    subprocess.run(["docker", "tag", cluster.image, upgraded], check=True, timeout=60)
    env = dict(cluster.env, PARLEY_IMAGE=upgraded)
    runner = Runner(chaos, cluster, target, seed=101, duration_s=150)
    agents = start_agents(cluster, "upgrade")
    time.sleep(10)
    began = time.monotonic()
    try:
        for n in NODES:
            started = time.monotonic()
            cluster.compose("up", "-d", "--no-deps", f"parley-{n}", env=env)
            recreated = time.monotonic() - started
            check(recreated < 20, f"node {n}: recreating took {recreated:.0f} s: the stop did "
                                  f"not finish within its drain (killed at the stop timeout?)")
            wait_for(f"node {n} /readyz after its upgrade", lambda n=n: cluster.ready(n), 120)
            leader = wait_for("one leader named by every node", cluster.leader, 60)
            image = cluster.inspect(n)["Config"]["Image"]
            check(image == upgraded, f"node {n} runs {image}, not {upgraded}")
            say(f"upgrade: node {n} recreated from {upgraded} in {recreated:.1f} s, ready and "
                f"leader {leader} after {time.monotonic() - started:.1f} s")
        left = runner.traffic_left_s()
        check(left > 0, "the upgrade outlasted the runner's traffic: not under load to the end")
        say(f"upgrade: all five nodes in {time.monotonic() - began:.0f} s, under load "
            f"({left:.0f} s of traffic left)")
        time.sleep(max(0.0, runner.traffic_left_s() - 20))
        check_agents(cluster, agents)
        runner.finish("upgrade")
    finally:
        cluster.image = upgraded


def phase_faults(cluster, chaos):
    target = os.path.join(cluster.state, "chaos-target.toml")
    runner = Runner(chaos, cluster, target, seed=7, duration_s=60)
    faults = runner.finish("faults (chaos-target.toml)")
    check(faults > 0, "the runner injected no fault through the target file's commands")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--chaos", required=True, help="the parley-chaos binary")
    parser.add_argument("--project", default="parley-test")
    parser.add_argument("--ports", default="18101,18102,18103,18104,18105")
    parser.add_argument("--report", help="write the output as markdown here")
    parser.add_argument("--skip-faults", action="store_true")
    args = parser.parse_args()
    ports = [int(p) for p in args.ports.split(",")]
    state = tempfile.mkdtemp(prefix="parley-compose-")
    cluster = Cluster(args.image, args.project, state, ports)
    target = os.path.join(state, "traffic-target.toml")
    began = time.monotonic()
    outcome = "FAILED"
    try:
        say(f"compose test: image {args.image}, project {args.project}, ports {args.ports}")
        phase_up(cluster)
        traffic_target(cluster, target)
        phase_cut(cluster, args.chaos, target)
        phase_upgrade(cluster, args.chaos, target)
        if not args.skip_faults:
            phase_faults(cluster, args.chaos)
        outcome = "PASSED"
    except Failed as failure:
        say(f"FAILED: {failure}")
        for n in NODES:
            logs = subprocess.run(["docker-compose", "-f", os.path.join(HERE, "docker-compose.yml"),
                                   "logs", "--no-color", "--tail", "15", f"parley-{n}"],
                                  env=cluster.env, capture_output=True, text=True, timeout=60)
            for line in logs.stdout.splitlines():
                say(f"  log {line}")
    finally:
        subprocess.run(["docker-compose", "-f", os.path.join(HERE, "docker-compose.yml"),
                        "down", "-v", "--remove-orphans", "-t", "20"], env=cluster.env,
                       capture_output=True, timeout=300)
        subprocess.run(["rm", "-rf", state], timeout=60)
        if cluster.image != args.image:
            subprocess.run(["docker", "rmi", cluster.image], capture_output=True, timeout=60)
        say(f"compose test {outcome} in {time.monotonic() - began:.0f} s")
        if args.report:
            with open(args.report, "w") as report:
                report.write(REPORT_HEAD.format(date=time.strftime("%Y-%m-%d %H:%M UTC",
                                                                   time.gmtime())))
                report.write("```\n" + "\n".join(LINES) + "\n```\n")
    return 0 if outcome == "PASSED" else 1


REPORT_HEAD = """# The compose deployment test: last run

`./dev.sh test-deploy` (deploy/compose/test.sh) writes this file: the five-node, three-site
compose cluster built from the container image, a site cut off with packets dropped under
customers and agents on every site, a rolling upgrade of the five containers under load, and
the SRE chaos target file's faults, each checked by the chaos runner's oracle. It takes longer
than CI's budget, so it runs on demand. Run of {date}:

"""

if __name__ == "__main__":
    sys.exit(main())
