"""The systemd unit (deploy/test.sh): `systemd-analyze verify` and `security`, the settings
docs/OPERATIONS.md, "systemd", promises, the node config checked by the real binary as the
unit hands it its credentials, and the `Type=notify` protocol spoken by the real binary.

Environment: PARLEY_BIN (the built `parley`, required).
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
UNIT = HERE / "parley.service"
NODE_TOML = HERE / "node.toml"
SYSUSERS = HERE / "parley.sysusers.conf"
# The exposure score `systemd-analyze security --offline=yes` gives the unit is 1.1 (systemd
# 252); the test fails above 1.2 (docs/OPERATIONS.md, "systemd").
SECURITY_THRESHOLD = 12
# What the node does on SIGTERM besides drain_wait and shutdown_grace: at most 3 s of
# leadership hand-over, 1 s of gRPC drain, and a margin (docs/OPERATIONS.md, "Running a node").
STOP_OVERHEAD_S = 3 + 2
STREAMS = 20_000


def run(command, **kwargs):
    return subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)


def parley_bin():
    path = os.environ.get("PARLEY_BIN")
    assert path and os.access(path, os.X_OK), "set PARLEY_BIN to the built parley binary"
    return os.path.abspath(path)


def directives():
    """The [Service] section's settings, name -> list of values, in order."""
    found = {}
    section = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def setting(name):
    values = directives().get(name)
    assert values, f"parley.service sets no {name}="
    return values[-1]


def seconds(text):
    value = re.fullmatch(r"(\d+)(ms|s|min|m)?", text)
    assert value, f"unexpected duration {text}"
    number, unit = int(value.group(1)), value.group(2) or "s"
    return number / 1000 if unit == "ms" else number * 60 if unit in ("min", "m") else number


@pytest.fixture
def installed_unit(tmp_path):
    """The unit with ExecStart= pointing at the built binary (verify needs it to exist)."""
    text = UNIT.read_text().replace("/usr/local/bin/parley", parley_bin())
    path = tmp_path / "parley.service"
    path.write_text(text)
    return path


# --- systemd's own checks --------------------------------------------------------------------


def test_systemd_analyze_verify_prints_nothing(installed_unit):
    result = run(["systemd-analyze", "verify", str(installed_unit)])
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_security_exposure_is_under_the_threshold(installed_unit):
    result = run(
        [
            "systemd-analyze",
            "security",
            "--offline=yes",
            f"--threshold={SECURITY_THRESHOLD}",
            str(installed_unit),
        ]
    )
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert score, result.stdout + result.stderr
    print(f"systemd-analyze security: exposure {score.group(1)}")
    assert result.returncode == 0, f"exposure {score.group(1)} is above {SECURITY_THRESHOLD / 10}"


def test_the_sysusers_file_makes_the_units_user(tmp_path):
    (tmp_path / "etc").mkdir()
    result = run(["systemd-sysusers", f"--root={tmp_path}", str(SYSUSERS)])
    assert result.returncode == 0, result.stderr
    users = {line.split(":")[0]: line for line in (tmp_path / "etc" / "passwd").read_text().splitlines()}
    user = setting("User")
    assert user in users
    assert users[user].split(":")[2] != "0"
    assert users[user].endswith(":/usr/sbin/nologin")


# --- the settings ----------------------------------------------------------------------------


def test_the_unit_speaks_the_notify_protocol():
    assert setting("Type") == "notify"
    assert setting("NotifyAccess") == "main"
    assert seconds(setting("WatchdogSec")) == 30
    assert setting("Restart") == "on-failure"
    assert seconds(setting("TimeoutStartSec")) == 15 * 60


def test_the_stop_timeout_outlasts_drain_and_grace():
    timeouts = tomllib.loads(NODE_TOML.read_text()).get("timeouts", {})
    stop_s = (
        seconds(timeouts.get("drain_wait", "2s"))
        + seconds(timeouts.get("shutdown_grace", "5s"))
        + STOP_OVERHEAD_S
    )
    assert seconds(setting("TimeoutStopSec")) > stop_s
    assert "ExecStop" not in directives(), "the node stops on SIGTERM alone"
    assert "member remove" not in UNIT.read_text()


def test_enough_files_for_twenty_thousand_streams():
    assert int(setting("LimitNOFILE")) >= 2 * STREAMS


@pytest.mark.parametrize(
    "name, value",
    [
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("ProtectSystem", "strict"),
        ("ReadWritePaths", "/var/lib/parley"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("PrivateUsers", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("UMask", "0077"),
        ("PrivateMounts", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("ProtectProc", "invisible"),
        ("RestrictRealtime", "yes"),
        ("LockPersonality", "yes"),
        ("RemoveIPC", "yes"),
        ("SystemCallErrorNumber", "EPERM"),
        ("StateDirectoryMode", "0700"),
    ],
)
def test_hardening(name, value):
    assert setting(name) == value


def test_system_calls_are_those_of_a_system_service():
    assert directives()["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]


def test_a_dedicated_user_owns_the_data_dir():
    assert setting("User") == "parley"
    assert "DynamicUser" not in directives()
    data_dir = tomllib.loads(NODE_TOML.read_text())["data_dir"]
    assert data_dir.startswith(setting("ReadWritePaths") + "/")
    assert data_dir.startswith("/var/lib/" + setting("StateDirectory") + "/")


def test_no_secret_is_in_the_config_file():
    config = tomllib.loads(NODE_TOML.read_text())
    for field in ("cluster_secret", "admin_token", "cluster_secret_file", "admin_token_file", "tls"):
        assert field not in config, f"node.toml sets {field}; it comes from a credential"


def credentials():
    """The credentials the unit loads, name -> source path, and its PARLEY_* environment."""
    loaded = dict(value.split(":", 1) for value in directives().get("LoadCredential", []))
    env = dict(value.split("=", 1) for value in directives().get("Environment", []))
    return loaded, env


def test_secrets_are_credentials():
    loaded, env = credentials()
    for variable in (
        "PARLEY_CLUSTER_SECRET_FILE",
        "PARLEY_ADMIN_TOKEN_FILE",
        "PARLEY_TLS__KEY_FILE",
        "PARLEY_TLS__CERT_FILE",
        "PARLEY_TLS__CA_FILE",
    ):
        value = env.get(variable, "")
        assert value.startswith("%d/"), f"{variable} is not under the credentials directory"
        assert value.removeprefix("%d/") in loaded, f"{variable} names no LoadCredential="


# --- the real binary under the unit's environment --------------------------------------------


def credentials_dir(tmp_path, nodes="1,2,3", node=1):
    """A credentials directory as systemd would make it, and the unit's environment with %d
    pointing at it."""
    parley = parley_bin()
    certs = tmp_path / "certs"
    made = run([parley, "certs", "--dir", str(certs), "--nodes", nodes])
    assert made.returncode == 0, made.stderr
    sources = {
        "/etc/parley/tls/ca.pem": certs / "ca.pem",
        "/etc/parley/tls/node.pem": certs / f"node-{node}.pem",
        "/etc/parley/tls/node.key": certs / f"node-{node}.key",
    }
    secrets = {
        "/etc/parley/secrets/cluster-secret": "systemd-test-cluster-secret-0123456789abcdef\n",
        "/etc/parley/secrets/admin-token": "systemd-test-admin-token-0123456789abcdef\n",
    }
    directory = tmp_path / "credentials"
    directory.mkdir()
    loaded, env = credentials()
    for name, source in loaded.items():
        if source in sources:
            shutil.copy(sources[source], directory / name)
        else:
            assert source in secrets, f"docs/OPERATIONS.md does not say what {source} holds"
            (directory / name).write_text(secrets[source])
    env = {k: v.replace("%d", str(directory)) for k, v in env.items()}
    env["PATH"] = os.environ.get("PATH", "")
    return env


def test_the_node_accepts_its_config_with_the_units_credentials(tmp_path):
    env = credentials_dir(tmp_path)
    result = run([parley_bin(), "check-config", "--config", str(NODE_TOML)], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: node 1 of cluster" in result.stdout
    assert "peers: mutual TLS" in result.stdout


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def readyz(http):
    try:
        with urllib.request.urlopen(f"http://{http}/readyz", timeout=1) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def one_node(tmp_path):
    """A one-node cluster from node.toml on free loopback ports, with its credentials: the
    environment, the config file, and the HTTP and gRPC addresses."""
    env = credentials_dir(tmp_path, nodes="1")
    http, grpc = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    text = NODE_TOML.read_text()
    text = text[: text.index("[[peers]]")]
    text += f'[[peers]]\nid = 1\nsite = "east"\ngrpc = "{grpc}"\nhttp = "{http}"\n'
    config = tmp_path / "node.toml"
    config.write_text(text)
    return env, config, http, grpc


def test_the_node_notifies_ready_watchdog_and_stopping(tmp_path):
    """A one-node cluster from node.toml run as systemd would: NOTIFY_SOCKET a datagram socket,
    WATCHDOG_USEC 1 s, the credentials. READY=1 comes once /readyz answers 200 and only once,
    WATCHDOG=1 every 0.5 s, STOPPING=1 on SIGTERM, then a clean exit."""
    env, config, http, grpc = one_node(tmp_path)
    notify = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(notify))
    env |= {
        "NOTIFY_SOCKET": str(notify),
        "WATCHDOG_USEC": "1000000",
        "PARLEY_DATA_DIR": str(tmp_path / "data"),
        "PARLEY_HTTP_LISTEN": http,
        "PARLEY_GRPC_LISTEN": grpc,
    }
    log = (tmp_path / "node.log").open("w")
    node = subprocess.Popen([parley_bin(), "serve", "--config", str(config)], env=env, stdout=log, stderr=log)
    messages = []  # (seconds since start, line, /readyz status when it arrived)
    start = time.monotonic()

    def receive(until):
        while time.monotonic() < until:
            receiver.settimeout(max(0.01, until - time.monotonic()))
            try:
                data = receiver.recv(4096).decode()
            except socket.timeout:
                break
            status = readyz(http) if "READY=1" in data.splitlines() else None
            for line in data.splitlines():
                messages.append((time.monotonic() - start, line, status))

    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(m[1] == "READY=1" for m in messages):
            assert node.poll() is None, (tmp_path / "node.log").read_text()
            receive(time.monotonic() + 0.5)
        ready = [m for m in messages if m[1] == "READY=1"]
        assert ready, f"no READY=1 in 60 s: {messages}\n{(tmp_path / 'node.log').read_text()}"
        assert ready[0][2] == 200, f"READY=1 came while /readyz answered {ready[0][2]}"
        assert any(line == "STATUS=ready" for _, line, _ in messages), messages
        # Two more seconds: WATCHDOG=1 every 0.5 s, no second READY=1.
        receive(time.monotonic() + 2.0)
        assert len([m for m in messages if m[1] == "READY=1"]) == 1
        pings = [t for t, line, _ in messages if line == "WATCHDOG=1" and t > ready[0][0]]
        assert len(pings) >= 3, messages
        node.send_signal(signal.SIGTERM)
        receive(time.monotonic() + 1.0)
        assert any(line == "STOPPING=1" for _, line, _ in messages), messages
        assert any(line == "STATUS=stopping" for _, line, _ in messages), messages
        assert node.wait(timeout=30) == 0, (tmp_path / "node.log").read_text()
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
        receiver.close()
        log.close()


def test_without_notify_socket_the_node_says_nothing_about_systemd(tmp_path):
    """The same node without NOTIFY_SOCKET: it becomes ready and logs nothing about systemd."""
    env, config, http, grpc = one_node(tmp_path)
    env |= {"PARLEY_DATA_DIR": str(tmp_path / "data"), "PARLEY_HTTP_LISTEN": http, "PARLEY_GRPC_LISTEN": grpc}
    log_path = tmp_path / "node.log"
    with log_path.open("w") as log:
        node = subprocess.Popen([parley_bin(), "serve", "--config", str(config)], env=env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and readyz(http) != 200:
                assert node.poll() is None, log_path.read_text()
                time.sleep(0.2)
            assert readyz(http) == 200, log_path.read_text()
            time.sleep(0.5)
            node.send_signal(signal.SIGTERM)
            assert node.wait(timeout=30) == 0, log_path.read_text()
        finally:
            if node.poll() is None:
                node.kill()
                node.wait()
    assert "systemd" not in log_path.read_text()
