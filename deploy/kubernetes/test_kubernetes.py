"""The Kubernetes manifests, rendered offline with `kubectl kustomize` (deploy/test.sh).

Each rule of docs/OPERATIONS.md, "Kubernetes", is one test on the rendered objects of the base
and of the multi-zone overlay, and the node config they carry is checked by the real binary
(`parley check-config`) as each pod would see it. Environment: KUBECTL (default `kubectl`),
PARLEY_BIN (the built `parley`, required), KUBERNETES_VALIDATE (default `kubernetes-validate`).
"""

import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
RENDERINGS = {
    "base": HERE / "base",
    "multi-zone": HERE / "overlays" / "multi-zone",
}
# What the node does on SIGTERM besides drain_wait and shutdown_grace: at most 3 s of
# leadership hand-over, 1 s of gRPC drain, and a margin to close RocksDB
# (docs/OPERATIONS.md, "Running a node").
STOP_OVERHEAD_S = 3 + 2


def run(command, **kwargs):
    return subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)


def render(directory):
    kubectl = os.environ.get("KUBECTL", "kubectl")
    result = run([kubectl, "kustomize", str(directory)])
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module", params=sorted(RENDERINGS))
def rendered(request):
    text = render(RENDERINGS[request.param])
    objects = [o for o in yaml.safe_load_all(text) if o]
    return Rendered(request.param, text, objects)


class Rendered:
    def __init__(self, name, text, objects):
        self.name = name
        self.text = text
        self.objects = objects

    def all(self, kind):
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind, name=None):
        found = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind} {name or ''}, got {len(found)}"
        return found[0]

    @property
    def statefulset(self):
        return self.one("StatefulSet")

    @property
    def pod(self):
        return self.statefulset["spec"]["template"]["spec"]

    @property
    def pod_labels(self):
        return self.statefulset["spec"]["template"]["metadata"]["labels"]

    @property
    def container(self):
        containers = self.pod["containers"]
        assert len(containers) == 1
        return containers[0]

    def env(self, name):
        for entry in self.container.get("env", []):
            if entry["name"] == name:
                return entry
        raise AssertionError(f"{self.name}: no env {name}")

    def container_port(self, name):
        for port in self.container["ports"]:
            if port["name"] == name:
                return port["containerPort"]
        raise AssertionError(f"{self.name}: no container port {name}")

    @property
    def config_path(self):
        args = self.container.get("command", []) + self.container.get("args", [])
        assert "--config" in args, args
        return args[args.index("--config") + 1]

    def mount_for(self, path):
        """The volume mount and volume that `path` is on (the longest mount path above it)."""
        best = None
        for mount in self.container.get("volumeMounts", []):
            base = mount["mountPath"].rstrip("/") + "/"
            if (path + "/").startswith(base) and (
                best is None or len(mount["mountPath"]) > len(best["mountPath"])
            ):
                best = mount
        assert best is not None, f"{self.name}: {path} is on no volume"
        volumes = {v["name"]: v for v in self.pod.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in self.statefulset["spec"].get("volumeClaimTemplates", [])}
        if best["name"] in claims:
            return best, {"persistentVolumeClaim": best["name"]}
        assert best["name"] in volumes, f"{self.name}: mount {best['name']} has no volume"
        return best, volumes[best["name"]]

    @property
    def config_map(self):
        _, volume = self.mount_for(self.config_path)
        assert "configMap" in volume, f"{self.config_path} is not from a ConfigMap"
        return self.one("ConfigMap", volume["configMap"]["name"])

    @property
    def node_toml_text(self):
        key = os.path.basename(self.config_path)
        return self.config_map["data"][key]

    @property
    def node_toml(self):
        return tomllib.loads(self.node_toml_text)

    def pod_env(self, pod_name):
        """The container's environment in pod `pod_name`, `$(VAR)` references resolved."""
        values = {}
        for entry in self.container.get("env", []):
            if "value" in entry:
                value = re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], entry["value"])
            else:
                field = entry["valueFrom"]["fieldRef"]["fieldPath"]
                assert field == "metadata.name", f"unexpected downward API field {field}"
                value = pod_name
            values[entry["name"]] = value
        return values


def selects(selector, labels):
    match = selector.get("matchLabels", selector)
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def seconds(text):
    value = re.fullmatch(r"(\d+)(ms|s|m)", text)
    assert value, f"unexpected duration {text}"
    number, unit = int(value.group(1)), value.group(2)
    return number / 1000 if unit == "ms" else number * 60 if unit == "m" else number


# --- kubernetes-validate ---------------------------------------------------------------------


def test_every_object_validates_strictly(rendered, tmp_path):
    path = tmp_path / f"{rendered.name}.yaml"
    path.write_text(rendered.text)
    validate = os.environ.get("KUBERNETES_VALIDATE", "kubernetes-validate")
    result = run(shlex.split(validate) + ["--strict", str(path)])
    print(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(rendered.objects)


# --- the StatefulSet -------------------------------------------------------------------------


def test_pods_start_in_parallel(rendered):
    # OrderedReady deadlocks: parley-0 is ready only once a leader exists, which needs parley-1.
    assert rendered.statefulset["spec"].get("podManagementPolicy") == "Parallel"


def test_updates_roll_one_pod_at_a_time(rendered):
    strategy = rendered.statefulset["spec"].get("updateStrategy", {"type": "RollingUpdate"})
    assert strategy["type"] == "RollingUpdate"
    assert strategy.get("rollingUpdate", {}).get("maxUnavailable", 1) == 1


def test_the_peers_service_is_headless_and_lists_pods_before_they_are_ready(rendered):
    name = rendered.statefulset["spec"]["serviceName"]
    service = rendered.one("Service", name)
    assert service["spec"].get("clusterIP") == "None"
    assert service["spec"].get("publishNotReadyAddresses") is True
    assert selects(service["spec"]["selector"], rendered.pod_labels)


def test_clients_have_a_service_with_http_and_no_grpc(rendered):
    peers = rendered.statefulset["spec"]["serviceName"]
    clients = [s for s in rendered.all("Service") if s["metadata"]["name"] != peers]
    assert len(clients) == 1
    spec = clients[0]["spec"]
    assert spec.get("clusterIP") != "None"
    assert not spec.get("publishNotReadyAddresses", False), "clients must reach ready pods only"
    assert selects(spec["selector"], rendered.pod_labels)
    targets = {p["targetPort"] for p in spec["ports"]}
    assert "http" in targets or rendered.container_port("http") in targets
    assert not targets & {"grpc", rendered.container_port("grpc")}


def test_the_node_id_comes_from_the_pod_ordinal(rendered):
    assert rendered.env("POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert rendered.env("PARLEY_NODE_ID_FROM_NAME")["value"] == "$(POD_NAME)"
    assert "node_id" not in rendered.node_toml


def test_the_config_names_every_pod_as_a_peer(rendered):
    spec = rendered.statefulset["spec"]
    config = rendered.node_toml
    grpc_port = rendered.container_port("grpc")
    http_port = rendered.container_port("http")
    expected = [
        (
            ordinal + 1,
            f"{rendered.statefulset['metadata']['name']}-{ordinal}.{spec['serviceName']}:{grpc_port}",
            f"{rendered.statefulset['metadata']['name']}-{ordinal}.{spec['serviceName']}:{http_port}",
        )
        for ordinal in range(spec["replicas"])
    ]
    assert [(p["id"], p["grpc"], p["http"]) for p in config["peers"]] == expected
    assert config["grpc_listen"].endswith(f":{grpc_port}")
    assert config["http_listen"].endswith(f":{http_port}")


def test_startup_and_liveness_probe_livez(rendered):
    for probe in ("startupProbe", "livenessProbe"):
        get = rendered.container[probe]["httpGet"]
        assert get["path"] == "/livez", probe
        assert get["port"] in ("http", rendered.container_port("http")), probe
    startup = rendered.container["startupProbe"]
    # A large store may take minutes to open: 10 minutes before liveness counts.
    assert startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3) >= 600


def test_readiness_probes_readyz(rendered):
    get = rendered.container["readinessProbe"]["httpGet"]
    assert get["path"] == "/readyz"
    assert get["port"] in ("http", rendered.container_port("http"))


def test_at_most_one_node_is_disrupted_at_a_time(rendered):
    budgets = rendered.all("PodDisruptionBudget")
    assert len(budgets) == 1
    spec = budgets[0]["spec"]
    assert spec.get("maxUnavailable") == 1
    assert "minAvailable" not in spec
    assert selects(spec["selector"], rendered.pod_labels)


def test_runs_as_non_root(rendered):
    pod = rendered.pod.get("securityContext", {})
    container = rendered.container.get("securityContext", {})
    assert container.get("runAsNonRoot", pod.get("runAsNonRoot")) is True
    assert container.get("runAsUser", pod.get("runAsUser", 0)) != 0


def test_the_root_filesystem_is_read_only(rendered):
    security = rendered.container["securityContext"]
    assert security.get("readOnlyRootFilesystem") is True
    assert security.get("allowPrivilegeEscalation") is False
    assert security.get("capabilities", {}).get("drop") == ["ALL"]


def test_the_pod_has_a_seccomp_profile_and_no_api_token(rendered):
    assert rendered.pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert rendered.pod.get("automountServiceAccountToken") is False


def test_the_data_dir_is_on_a_persistent_volume(rendered):
    mount, volume = rendered.mount_for(rendered.node_toml["data_dir"])
    assert "persistentVolumeClaim" in volume
    assert not mount.get("readOnly", False)


def test_tmp_is_a_writable_empty_dir(rendered):
    mount, volume = rendered.mount_for("/tmp")
    assert "emptyDir" in volume
    assert not mount.get("readOnly", False)


def test_tls_and_secrets_come_from_secrets(rendered):
    config = rendered.node_toml
    env = rendered.pod_env("parley-0")
    paths = [
        config["tls"]["ca_file"],
        env["PARLEY_TLS__CERT_FILE"],
        env["PARLEY_TLS__KEY_FILE"],
        config["cluster_secret_file"],
        config["admin_token_file"],
    ]
    assert "cluster_secret" not in config and "admin_token" not in config
    for path in paths:
        mount, volume = rendered.mount_for(path)
        assert "secret" in volume, f"{path} is not from a Secret"
        assert mount.get("readOnly") is True, path
        # Readable by the owner and the pod's fsGroup (the node's group), nobody else.
        assert volume["secret"].get("defaultMode") == 0o440, path
    for entry in rendered.container.get("env", []):
        assert "secretKeyRef" not in entry.get("valueFrom", {}), "a secret in the environment"


def test_the_node_config_is_a_config_map(rendered):
    mount, volume = rendered.mount_for(rendered.config_path)
    assert "configMap" in volume
    assert mount.get("readOnly") is True
    assert rendered.node_toml_text
    # Named with a hash of its contents, so a change rolls the pods.
    assert re.fullmatch(r"parley-config-[a-z0-9]{10}", rendered.config_map["metadata"]["name"])


def test_no_prestop_hook_removes_a_member(rendered):
    # SIGTERM drain only: a pod that removed itself on stop would lose a voter on every restart.
    for container in rendered.pod["containers"] + rendered.pod.get("initContainers", []):
        assert "preStop" not in container.get("lifecycle", {}), container["name"]
    assert "member remove" not in rendered.text


def test_the_grace_period_outlasts_drain_and_grace(rendered):
    timeouts = rendered.node_toml.get("timeouts", {})
    stop_s = (
        seconds(timeouts.get("drain_wait", "2s"))
        + seconds(timeouts.get("shutdown_grace", "5s"))
        + STOP_OVERHEAD_S
    )
    assert rendered.pod["terminationGracePeriodSeconds"] > stop_s


def test_service_links_stay_out_of_the_environment(rendered):
    # Service links would add PARLEY_PORT=tcp://... and the like, which the node reads as
    # (unknown) config fields and refuses to start.
    assert rendered.pod.get("enableServiceLinks") is False


def test_only_the_clusters_pods_reach_grpc(rendered):
    grpc_port = rendered.container_port("grpc")
    policies = [
        p for p in rendered.all("NetworkPolicy") if selects(p["spec"]["podSelector"], rendered.pod_labels)
    ]
    assert len(policies) == 1
    spec = policies[0]["spec"]
    assert "Ingress" in spec["policyTypes"]
    admitting = []
    for rule in spec.get("ingress", []):
        ports = rule.get("ports")
        # A rule without ports admits every port, gRPC included.
        if ports is None or any(p.get("port") in (grpc_port, "grpc") for p in ports):
            admitting.append(rule)
    assert admitting, "no rule lets the peers reach gRPC"
    for rule in admitting:
        peers = rule.get("from")
        assert peers, f"rule {rule} admits gRPC from anywhere"
        for peer in peers:
            assert set(peer) == {"podSelector"}, f"{peer} admits more than the cluster's pods"
            assert selects(peer["podSelector"], rendered.pod_labels)


# --- the multi-zone overlay ------------------------------------------------------------------


def test_the_multi_zone_overlay_spreads_pods_over_zones():
    rendered = Rendered("multi-zone", *rendered_objects(RENDERINGS["multi-zone"]))
    constraints = rendered.pod["topologySpreadConstraints"]
    zones = [c for c in constraints if c["topologyKey"] == "topology.kubernetes.io/zone"]
    assert len(zones) == 1
    zone = zones[0]
    assert zone["whenUnsatisfiable"] == "DoNotSchedule"
    assert zone["maxSkew"] == 1
    assert zone.get("minDomains") == rendered.statefulset["spec"]["replicas"]
    assert selects(zone["labelSelector"], rendered.pod_labels)
    keys = [(c["topologyKey"], c["whenUnsatisfiable"]) for c in constraints]
    assert len({k for k, _ in keys}) == len(keys), f"conflicting constraints {keys}"


def rendered_objects(directory):
    text = render(directory)
    return text, [o for o in yaml.safe_load_all(text) if o]


# --- the node accepts the config as each pod sees it -----------------------------------------


def parley_bin():
    path = os.environ.get("PARLEY_BIN")
    assert path and os.access(path, os.X_OK), "set PARLEY_BIN to the built parley binary"
    return path


def test_every_pod_passes_check_config(rendered, tmp_path):
    """The container's file system (its mounts) is laid under tmp_path: the ConfigMap, the two
    Secrets filled as docs/OPERATIONS.md says (`parley certs`, node N+1's files as parley-N),
    and the node checks its config with the pod's environment."""
    parley = parley_bin()
    replicas = rendered.statefulset["spec"]["replicas"]
    certs = tmp_path / "certs"
    nodes = ",".join(str(i + 1) for i in range(replicas))
    made = run([parley, "certs", "--dir", str(certs), "--nodes", nodes])
    assert made.returncode == 0, made.stderr
    root = tmp_path / "root"
    secret_files = {
        "parley-peer-tls": {"ca.pem": certs / "ca.pem"},
        "parley-secrets": {},
    }
    for ordinal in range(replicas):
        secret_files["parley-peer-tls"][f"parley-{ordinal}.pem"] = certs / f"node-{ordinal + 1}.pem"
        secret_files["parley-peer-tls"][f"parley-{ordinal}.key"] = certs / f"node-{ordinal + 1}.key"
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    for mount in rendered.container["volumeMounts"]:
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        volume = volumes.get(mount["name"], {})
        if "configMap" in volume:
            config_map = rendered.one("ConfigMap", volume["configMap"]["name"])
            for key, text in config_map["data"].items():
                (target / key).write_text(text.replace("/etc/parley/", f"{root}/etc/parley/"))
        elif "secret" in volume:
            name = volume["secret"]["secretName"]
            assert name in secret_files, f"docs/OPERATIONS.md does not say how to make {name}"
            for key, source in secret_files[name].items():
                shutil.copy(source, target / key)
            if name == "parley-secrets":
                (target / "cluster-secret").write_text("k8s-test-cluster-secret-0123456789abcdef\n")
                (target / "admin-token").write_text("k8s-test-admin-token-0123456789abcdef\n")
    config = f"{root}{rendered.config_path}"
    for ordinal in range(replicas):
        env = {
            k: v.replace("/etc/parley/", f"{root}/etc/parley/")
            for k, v in rendered.pod_env(f"parley-{ordinal}").items()
        }
        env["PATH"] = os.environ.get("PATH", "")
        checked = run([parley, "check-config", "--config", config], env=env)
        assert checked.returncode == 0, f"parley-{ordinal}: {checked.stdout}{checked.stderr}"
        assert f"ok: node {ordinal + 1} of cluster" in checked.stdout, checked.stdout
        assert f"forms a new cluster of {replicas} members" in checked.stdout
        assert "peers: mutual TLS" in checked.stdout
