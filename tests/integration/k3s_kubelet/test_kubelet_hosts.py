"""The stand-in's kubelet on three real systemd test hosts (a server and two agents on a podman network of
their own), driven by the real kubectl 1.36.4: a pod that runs and logs, a crash-looping pod's restarts and
back-off,
a pod whose image cannot be pulled, and an Ollama pod made from the ensemble role's rendered Deployment (its
real pull init container, probes, volumes and security context) that becomes Ready and is reached by its
Service name from a pod on the other agent."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from gorkheavy_lab.k3s.build import build
from gorkheavy_lab.k3s.testing import kubectl as run_kubectl

from tests.hosts.systemd_host import SystemdHost, build_image
from tests.unit.ensemble.rendering import run_render

pytestmark = [pytest.mark.hosts, pytest.mark.slow]

NETWORK = "kubelet-net"
SUBNET = "10.89.77.0/24"
TOKEN = "kubelet-test-secret"
UNIT = """[Unit]
Description=Lightweight Kubernetes
After=network-online.target

[Service]
Type=notify
Environment=GORKHEAVY_KUBELET_BACKOFF_SECONDS=1
ExecStart=/usr/local/bin/k3s {command}
KillMode=process
Delegate=yes
Restart=always
RestartSec=5s

[Install]
WantedBy=multi-user.target
"""


@dataclass
class Cluster:
    server: SystemdHost
    agents: list[SystemdHost]
    kubeconfig: Path
    rendered: Path
    tmp: Path

    def kubectl(self, *args: str, check: bool = True) -> str:
        result = run_kubectl(self.kubeconfig, *args, check=False)
        if check:
            assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result.stdout

    def apply(self, *objects: dict[str, Any]) -> None:
        path = self.tmp / f"apply-{time.monotonic_ns()}.yaml"
        path.write_text(yaml.safe_dump_all(objects))
        self.kubectl("apply", "-f", str(path))

    def pod(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", "pod", "-n", namespace, name, "-o", "json")))

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        out = self.kubectl(
            "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json"
        )
        return list(json.loads(out)["items"])


def _install(host: SystemdHost, artifact: Path, unit: str, command: str, config: dict[str, object]) -> None:
    host.sh("mkdir -p /var/lib/k3s-artifact /etc/rancher/k3s")
    subprocess.run(
        ["podman", "cp", str(artifact / "k3s"), f"{host.name}:/usr/local/bin/k3s"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    host.sh("umask 077; cat > /etc/rancher/k3s/config.yaml", stdin=yaml.safe_dump(config))
    host.sh(f"cat > /etc/systemd/system/{unit}", stdin=UNIT.format(command=command))
    host.sh("systemctl daemon-reload")


def _network() -> bool:
    """Our own podman network; True when this run created it (and so removes it)."""
    if subprocess.run(["podman", "network", "exists", NETWORK], check=False).returncode == 0:
        return False
    subprocess.run(
        ["podman", "network", "create", "--subnet", SUBNET, NETWORK], check=True, capture_output=True
    )
    return True


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    # The deadlines are what an idle machine needs; the suite runs this module beside other tests, so
    # each gets three times as long. The condition is polled, so a healthy run waits no longer for it.
    timeout *= 3
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    build_image()
    tmp = tmp_path_factory.mktemp("kubelet-hosts")
    artifact = tmp / "artifact"
    build(artifact, "v1.36.4+k3s1", "amd64")
    key = tmp / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    created = _network()
    hosts: list[SystemdHost] = []
    try:
        with ThreadPoolExecutor(4) as pool:
            # the ensemble role's manifests, rendered by the real playbook while the hosts boot
            rendering = pool.submit(run_render, tmp / "rendered", tmp / "artifact-cache")
            hosts = list(
                pool.map(
                    lambda p: SystemdHost.start(p, key.with_suffix(".pub"), network=NETWORK, ip_forward=True),
                    ["kubelet-server", "kubelet-agent", "kubelet-agent"],
                )
            )
            server, agents = hosts[0], hosts[1:]
            _install(server, artifact, "k3s.service", "server", {"token": TOKEN, "tls-san": [server.address]})
            server.sh("systemctl start k3s.service")
            for agent in agents:
                _install(
                    agent,
                    artifact,
                    "k3s-agent.service",
                    "agent",
                    {"server": f"https://{server.address}:6443", "token": TOKEN},
                )
                # one after the other: each agent's podCIDR follows the nodes registered before it
                agent.sh("systemctl start k3s-agent.service")
            rendering.result()
        kubeconfig = yaml.safe_load(server.sh("cat /etc/rancher/k3s/k3s.yaml").stdout)
        kubeconfig["clusters"][0]["cluster"]["server"] = f"https://{server.address}:6443"
        path = tmp / "kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig))
        path.chmod(0o600)
        c = Cluster(server, agents, path, tmp / "rendered", tmp)
        _wait(lambda: c.kubectl("get", "nodes").count(" Ready ") == 3, 40, "three Ready nodes")
        yield c
    finally:
        for host in hosts:
            host.remove()
        if created:
            subprocess.run(["podman", "network", "rm", NETWORK], check=False, capture_output=True)


def _python_pod(name: str, node: str, script: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "main", "image": "python:3.11-slim", "command": ["sh", "-c", script]}],
            **spec,
        },
    }


def test_pod_runs_as_its_user_and_logs(cluster: Cluster) -> None:
    agent = cluster.agents[0]
    script = 'echo "hello from $(id -u):$(id -g) in $PWD"; echo "to stderr" >&2; exec sleep 3600'
    pod = _python_pod("hello", agent.name, script, securityContext={"runAsUser": 1000, "runAsGroup": 1000})
    pod["spec"]["containers"][0]["workingDir"] = "/tmp"
    cluster.apply(pod)
    _wait(lambda: "hello from" in cluster.kubectl("logs", "hello", check=False), 30, "the pod's log line")
    status = cluster.pod("default", "hello")["status"]
    assert status["phase"] == "Running"
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Ready"] == "True"
    assert status["podIP"].startswith("10.42.")
    assert status["hostIP"] == agent.address
    assert cluster.kubectl("logs", "hello").splitlines() == ["hello from 1000:1000 in /tmp", "to stderr"]
    # CRI format on the node, where the kubelet keeps it
    uid = cluster.pod("default", "hello")["metadata"]["uid"]
    lines = agent.sh(f"cat /var/log/pods/default_hello_{uid}/main/0.log").stdout.splitlines()
    assert lines[0].split(" ", 3)[1:] == ["stdout", "F", "hello from 1000:1000 in /tmp"]
    assert lines[1].split(" ", 3)[1:] == ["stderr", "F", "to stderr"]
    reasons = [e["reason"] for e in cluster.events("default", "hello")]
    assert {"Pulling", "Pulled", "Created", "Started"} <= set(reasons)
    # a process of uid 1000 on the node: the pod's user namespace maps uids one to one
    assert "1000" in agent.sh("ps -o uid= -C sleep").stdout.split()
    # kubectl exec runs in the container: its user, working directory and the pod's resolv.conf
    inside = cluster.kubectl("exec", "hello", "--", "sh", "-c", "id -u; pwd; head -n 1 /etc/resolv.conf")
    assert inside.splitlines() == [
        "1000",
        "/tmp",
        "search default.svc.cluster.local svc.cluster.local cluster.local",
    ]
    cluster.kubectl("delete", "pod", "hello", "--wait=false")
    _wait(
        lambda: "sleep" not in agent.sh("ps -o comm= -u 1000", check=False).stdout,
        40,
        "the pod's processes end",
    )


def test_crash_loop_restarts_with_back_off(cluster: Cluster) -> None:
    node = cluster.agents[1].name
    cluster.apply(_python_pod("crash", node, 'echo "attempt at $(date +%s)"; exit 3'))

    def looping() -> bool:
        statuses = cluster.pod("default", "crash").get("status", {}).get("containerStatuses") or [{}]
        return bool(
            statuses[0].get("restartCount", 0) >= 2
            and statuses[0].get("state", {}).get("waiting", {}).get("reason") == "CrashLoopBackOff"
        )

    _wait(looping, 40, "CrashLoopBackOff after two restarts")
    status = cluster.pod("default", "crash")["status"]["containerStatuses"][0]
    assert status["lastState"]["terminated"]["exitCode"] == 3
    assert status["lastState"]["terminated"]["reason"] == "Error"
    assert status["state"]["waiting"]["message"].startswith("back-off ")
    assert "restarting failed container=main pod=crash_default(" in status["state"]["waiting"]["message"]
    events = {e["reason"]: e for e in cluster.events("default", "crash")}
    assert events["BackOff"]["type"] == "Warning"
    assert events["BackOff"]["message"].startswith(
        "Back-off restarting failed container main in pod crash_default("
    )
    assert events["Started"]["count"] >= 3
    assert cluster.kubectl("logs", "crash", "--previous").startswith("attempt at ")
    cluster.kubectl("delete", "pod", "crash", "--wait=false")


def test_failing_liveness_probe_restarts_the_container(cluster: Cluster) -> None:
    pod = _python_pod(
        "liveness",
        cluster.agents[1].name,
        "exec python3 -m http.server 8080",
        terminationGracePeriodSeconds=2,
    )
    pod["spec"]["containers"][0]["ports"] = [{"name": "web", "containerPort": 8080}]
    # liveness probing starts once the startup probe has passed: the server is up, so it answers 404
    pod["spec"]["containers"][0]["startupProbe"] = {
        "tcpSocket": {"port": 8080},
        "periodSeconds": 1,
        "failureThreshold": 60,
    }
    pod["spec"]["containers"][0]["livenessProbe"] = {
        "httpGet": {"path": "/missing", "port": "web"},
        "periodSeconds": 1,
        "failureThreshold": 2,
    }
    cluster.apply(pod)

    def restarted() -> bool:
        statuses = cluster.pod("default", "liveness").get("status", {}).get("containerStatuses") or [{}]
        return int(statuses[0].get("restartCount", 0)) >= 1

    _wait(restarted, 40, "a restart after the liveness probe failed")
    messages = {(e["reason"], e["message"]) for e in cluster.events("default", "liveness")}
    assert ("Unhealthy", "Liveness probe failed: HTTP probe failed with statuscode: 404") in messages
    assert ("Killing", "Container main failed liveness probe, will be restarted") in messages
    # the server answered the probes it failed: its log shows kube-probe's requests
    assert '"GET /missing HTTP/1.1" 404' in cluster.kubectl("logs", "liveness", "--previous")
    cluster.kubectl("delete", "pod", "liveness", "--wait=false")


def test_unknown_image_fails_to_pull_as_containerd(cluster: Cluster) -> None:
    node = cluster.agents[0].name
    pod = _python_pod("noimage", node, "true")
    pod["spec"]["containers"][0]["image"] = "registry.example/nosuch:1.0"
    cluster.apply(pod)

    def backing_off() -> bool:
        statuses = cluster.pod("default", "noimage").get("status", {}).get("containerStatuses") or [{}]
        return statuses[0].get("state", {}).get("waiting", {}).get("reason") == "ImagePullBackOff"

    _wait(backing_off, 30, "ImagePullBackOff")
    ref = "registry.example/nosuch:1.0"
    messages = [e["message"] for e in cluster.events("default", "noimage")]
    assert (
        f'Failed to pull image "{ref}": rpc error: code = NotFound desc = failed to pull and unpack image '
        f'"{ref}": failed to resolve reference "{ref}": {ref}: not found'
    ) in messages
    assert "Error: ErrImagePull" in messages
    assert "Error: ImagePullBackOff" in messages
    assert f'Back-off pulling image "{ref}"' in messages
    assert cluster.pod("default", "noimage")["status"]["phase"] == "Pending"
    cluster.kubectl("delete", "pod", "noimage", "--wait=false")


def _rendered(directory: Path) -> dict[tuple[str, str], dict[str, Any]]:
    objects = {}
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def test_ollama_pod_of_the_role_becomes_ready_and_answers_by_service_name(cluster: Cluster) -> None:
    objects = _rendered(cluster.rendered)
    deployment = objects[("Deployment", "judge")]
    template = deployment["spec"]["template"]
    model = deployment["metadata"]["annotations"]["gorkheavy.lite/model"]
    model_node, client_node = cluster.agents[0], cluster.agents[1]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**template["metadata"], "name": "judge-0", "namespace": "gorkheavy"},
        "spec": {**template["spec"], "nodeName": model_node.name},
    }
    cluster.apply(
        objects[("Namespace", "gorkheavy")],
        objects[("PersistentVolumeClaim", "judge-store")],
        objects[("Service", "judge")],
        pod,
    )

    def ready() -> bool:
        conditions = cluster.pod("gorkheavy", "judge-0").get("status", {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    try:
        _wait(ready, 300, "the Ollama pod Ready")
    except AssertionError:
        seen = cluster.kubectl("describe", "pod", "-n", "gorkheavy", "judge-0", check=False)
        logs = model_node.sh("tail -n 20 /var/log/pods/gorkheavy_judge-0_*/*/*.log", check=False).stdout
        raise AssertionError(f"not Ready:\n{seen}\n{logs}") from None
    pull_log = cluster.kubectl("logs", "-n", "gorkheavy", "judge-0", "-c", "pull")
    assert f"pull: pulling {model}" in pull_log
    assert f"pull: {model} is in the store" in pull_log
    status = cluster.pod("gorkheavy", "judge-0")["status"]
    assert status["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    assert status["containerStatuses"][0]["started"] is True
    # the model store is on the PVC's directory on the node, written by the pod's uid 1000
    owner = model_node.sh("stat -c %u /var/lib/rancher/k3s/storage/pvc-*_gorkheavy_judge-store/models").stdout
    assert owner.strip() == str(template["spec"]["securityContext"]["runAsUser"])
    # from the other agent, by the Service's name, through the cluster DNS and kube-proxy
    client = _python_pod(
        "client",
        client_node.name,
        'python3 -c "import urllib.request; print(urllib.request.urlopen('
        "'http://judge:11434/api/tags', timeout=10).read().decode())\"",
        restartPolicy="Never",
    )
    client["metadata"]["namespace"] = "gorkheavy"
    cluster.apply(client)
    _wait(
        lambda: cluster.pod("gorkheavy", "client").get("status", {}).get("phase") in {"Succeeded", "Failed"},
        40,
        "the client pod finished",
    )
    out = cluster.kubectl("logs", "-n", "gorkheavy", "client")
    assert cluster.pod("gorkheavy", "client")["status"]["phase"] == "Succeeded", out
    assert [m["name"] for m in json.loads(out)["models"]] == [model]
