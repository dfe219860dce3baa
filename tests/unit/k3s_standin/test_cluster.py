"""A server and agents on this machine: token and kubeconfig files, the join protocol and its refusals (wrong
CA hash, wrong secret, unreachable server) with K3s's log lines and retry cadence, the real kubectl 1.36.4 and
the Python ``kubernetes`` client against the API, a node going Unknown when its agent stops."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from gorkheavy_lab.k3s.testing import Process, free_port, running
from gorkheavy_lab.k3s.testing import kubectl as run_kubectl

TOKEN = re.compile(r"^K10(?P<hash>[0-9a-f]{64})::server:(?P<secret>[0-9a-f]{32})\n$")


def kubectl(server: Process, *args: str) -> str:
    return run_kubectl(server.root / "k3s.yaml", *args).stdout


def fetch(url: str, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    ctx = context or ssl._create_unverified_context()
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def api_client(server: Process) -> kubernetes.client.CoreV1Api:
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(str(server.root / "k3s.yaml"), client_configuration=config)
    return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(config))


def wait_node(server: Process, name: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = run_kubectl(server.root / "k3s.yaml", "get", "node", name, "-o", "json", check=False)
        if out.returncode == 0:
            node: dict[str, Any] = json.loads(out.stdout)
            return node
        time.sleep(0.3)
    msg = f"node {name} never registered"
    raise AssertionError(msg)


def test_token_files_in_k3s_secure_format(server: Process) -> None:
    token = server.data / "server" / "token"
    assert token.stat().st_mode & 0o777 == 0o600
    match = TOKEN.match(token.read_text())
    assert match is not None, token.read_text()
    status, cacerts = fetch(f"https://127.0.0.1:{server.port}/cacerts")  # type: ignore[attr-defined]
    assert status == 200
    assert cacerts == (server.data / "server" / "tls" / "server-ca.crt").read_bytes()
    assert match["hash"] == hashlib.sha256(cacerts).hexdigest()
    for name in ("node-token", "agent-token"):
        link = server.data / "server" / name
        assert link.is_symlink()
        assert link.read_text() == token.read_text()
    for name in ("server-ca.crt", "client-ca.crt", "client-admin.crt", "client-admin.key", "server-ca.key"):
        assert (server.data / "server" / "tls" / name).is_file()


def test_kubeconfig_shape_and_mode(server: Process) -> None:
    path = server.root / "k3s.yaml"
    assert path.stat().st_mode & 0o777 == 0o640  # write-kubeconfig-mode from config.yaml
    config = yaml.safe_load(path.read_text())
    assert config["current-context"] == "default"
    assert (
        config["clusters"][0]["name"]
        == config["users"][0]["name"]
        == config["contexts"][0]["name"]
        == "default"
    )
    assert config["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{server.port}"  # type: ignore[attr-defined]
    ca = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"])
    assert ca == (server.data / "server" / "tls" / "server-ca.crt").read_bytes()
    cert = base64.b64decode(config["users"][0]["user"]["client-certificate-data"])
    assert cert.startswith((server.data / "server" / "tls" / "client-admin.crt").read_bytes()[:64])


def test_health_endpoints_need_authentication_as_in_k3s(server: Process) -> None:
    port = server.port  # type: ignore[attr-defined]
    for path in ("/readyz", "/livez", "/healthz", "/version", "/api"):
        status, body = fetch(f"https://127.0.0.1:{port}{path}")
        assert status == 401, path
        assert json.loads(body) == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "Unauthorized",
            "reason": "Unauthorized",
            "code": 401,
        }
    status, body = fetch(f"https://127.0.0.1:{port}/ping")
    assert (status, body) == (200, b"pong")
    tls = server.data / "server" / "tls"
    ctx = ssl.create_default_context(cafile=str(tls / "server-ca.crt"))
    ctx.load_cert_chain(str(tls / "client-admin.crt"), str(tls / "client-admin.key"))
    assert fetch(f"https://127.0.0.1:{port}/readyz", ctx) == (200, b"ok")


def test_real_kubectl_against_the_server(server: Process) -> None:
    assert kubectl(server, "get", "--raw", "/readyz") == "ok"
    assert kubectl(server, "get", "--raw", "/readyz/ping") == "ok"
    verbose = kubectl(server, "get", "--raw", "/readyz?verbose").splitlines()
    assert verbose[0] == "[+]ping ok"
    assert verbose[-1] == "readyz check passed"
    version = kubectl(server, "version")
    assert "Client Version: v1.36.4\n" in version
    assert "Server Version: v1.36.4+k3s1\n" in version
    lines = kubectl(server, "get", "nodes", "-o", "wide").splitlines()
    assert lines[0].split() == [
        "NAME",
        "STATUS",
        "ROLES",
        "AGE",
        "VERSION",
        "INTERNAL-IP",
        "EXTERNAL-IP",
        "OS-IMAGE",
        "KERNEL-VERSION",
        "CONTAINER-RUNTIME",
    ]
    row = lines[1].split()
    assert row[:3] == ["k3sim-server", "Ready", "control-plane"]
    assert row[4:6] == ["v1.36.4+k3s1", "127.0.0.1"]


def test_server_node_labels_and_taints(server: Process) -> None:
    node = wait_node(server, "k3sim-server")
    labels = node["metadata"]["labels"]
    assert labels["node-role.kubernetes.io/control-plane"] == "true"
    assert labels["gorkheavy.io/role"] == "orchestrator"
    assert labels["kubernetes.io/hostname"] == "k3sim-server"
    assert node["spec"]["taints"] == [
        {"key": "node-role.kubernetes.io/control-plane", "value": "true", "effect": "NoSchedule"}
    ]


def agent_args(server: Process, token: str, name: str, *extra: str) -> list[str]:
    return [
        "agent",
        "-c",
        "/nonexistent/config.yaml",
        "--server",
        f"https://127.0.0.1:{server.port}",  # type: ignore[attr-defined]
        "--token",
        token,
        "--node-name",
        name,
        "--node-ip",
        "127.0.0.1",
        "--lb-server-port",
        str(free_port()),
        "--kubelet-arg",
        "node-lease-duration-seconds=4",  # renewed every second: the server's grace period is 4 s
        *extra,
    ]


@pytest.fixture(scope="module")
def joined(k3s_binary: Path, server: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    # one agent for the module: a second start with a fresh /etc/rancher/node/password would be refused
    tmp_path = tmp_path_factory.mktemp("k3s-agent")
    token = (server.data / "server" / "token").read_text().strip()
    args = agent_args(
        server,
        token,
        "k3sim-agent-1",
        "--node-label",
        "gorkheavy.io/models=true",
        "--node-taint",
        "gorkheavy.io/models=true:PreferNoSchedule",
        "-d",
        str(tmp_path / "data"),
    )
    with running(
        k3s_binary, tmp_path, args, ready="Annotations and labels have been set successfully"
    ) as agent:
        yield agent


def test_agent_joins_with_labels_taints_address(server: Process, joined: Process) -> None:
    node = wait_node(server, "k3sim-agent-1")
    assert node["metadata"]["labels"]["gorkheavy.io/models"] == "true"
    assert "node-role.kubernetes.io/control-plane" not in node["metadata"]["labels"]
    assert node["spec"]["taints"] == [
        {"key": "gorkheavy.io/models", "value": "true", "effect": "PreferNoSchedule"}
    ]
    assert {"type": "InternalIP", "address": "127.0.0.1"} in node["status"]["addresses"]
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert ready["reason"] == "KubeletReady"
    assert "Running load balancer k3s-agent-load-balancer 127.0.0.1:" in joined.log()


def test_python_client_patches_labels_and_taints(server: Process, joined: Process) -> None:
    api = api_client(server)
    api.patch_node("k3sim-agent-1", {"metadata": {"labels": {"gorkheavy.io/pool": "a"}}})
    api.patch_node(
        "k3sim-agent-1", {"spec": {"taints": [{"key": "x", "value": "y", "effect": "NoSchedule"}]}}
    )
    node = api.read_node("k3sim-agent-1")
    assert node.metadata.labels["gorkheavy.io/pool"] == "a"
    assert node.metadata.labels["gorkheavy.io/models"] == "true"
    assert [(t.key, t.value, t.effect) for t in node.spec.taints] == [("x", "y", "NoSchedule")]
    names = [n.metadata.name for n in api.list_node(label_selector="gorkheavy.io/pool=a").items]
    assert names == ["k3sim-agent-1"]


def test_kubectl_label_and_taint(server: Process, joined: Process) -> None:
    kubectl(server, "label", "node", "k3sim-agent-1", "gorkheavy.io/tier=gpu", "--overwrite")
    kubectl(server, "taint", "node", "k3sim-agent-1", "gorkheavy.io/dedicated=models:NoSchedule")
    node = wait_node(server, "k3sim-agent-1")
    assert node["metadata"]["labels"]["gorkheavy.io/tier"] == "gpu"
    assert {"key": "gorkheavy.io/dedicated", "value": "models", "effect": "NoSchedule"} in node["spec"][
        "taints"
    ]


def _join_log(
    k3s_binary: Path, server: Process, tmp_path: Path, *, token: str, line: str, count: int = 2, **kw: Any
) -> str:
    args = agent_args(server, token, "k3sim-refused", "-d", str(tmp_path / "data"))
    if "server_url" in kw:
        args[args.index("--server") + 1] = kw["server_url"]
    with running(k3s_binary, tmp_path, args, ready="") as agent:
        start = time.monotonic()
        log = agent.wait_for(line, timeout=20, count=count)
        elapsed = time.monotonic() - start
    assert "Annotations and labels have been set successfully" not in log
    return log + f"\n#elapsed={elapsed:.1f}"


def test_wrong_ca_hash_is_refused_and_retried_every_2s(
    k3s_binary: Path, server: Process, tmp_path: Path
) -> None:
    secret = TOKEN.match((server.data / "server" / "token").read_text())["secret"]  # type: ignore[index]
    wrong = "0" * 64
    real = hashlib.sha256((server.data / "server" / "tls" / "server-ca.crt").read_bytes()).hexdigest()
    line = (
        f'level=error msg="Failed to validate connection to cluster at https://127.0.0.1:{server.port}: '  # type: ignore[attr-defined]
        f'token CA hash does not match the Cluster CA certificate hash: {wrong} != {real}"'
    )
    log = _join_log(k3s_binary, server, tmp_path, token=f"K10{wrong}::server:{secret}", line=line, count=2)
    assert float(log.rsplit("#elapsed=", 1)[1]) >= 1.5


def test_wrong_secret_is_not_authorized(k3s_binary: Path, server: Process, tmp_path: Path) -> None:
    real = hashlib.sha256((server.data / "server" / "tls" / "server-ca.crt").read_bytes()).hexdigest()
    line = (
        'level=info msg="Waiting to retrieve agent configuration; server is not ready: '
        'failed to retrieve configuration from server: not authorized"'
    )
    _join_log(k3s_binary, server, tmp_path, token=f"K10{real}::server:not-the-secret", line=line, count=1)
    assert "invalid username/password combination" in server.log()


def test_unreachable_server_is_logged_and_retried(k3s_binary: Path, server: Process, tmp_path: Path) -> None:
    dead = free_port()
    line = (
        f'level=error msg="Failed to validate connection to cluster at https://127.0.0.1:{dead}: '
        "failed to get CA certs"
    )
    log = _join_log(
        k3s_binary,
        server,
        tmp_path,
        token="secret",
        line=line,
        count=2,
        server_url=f"https://127.0.0.1:{dead}",
    )
    assert "connection reset by peer" in log


def test_node_goes_unknown_when_its_agent_stops(k3s_binary: Path, server: Process, tmp_path: Path) -> None:
    token = (server.data / "server" / "token").read_text().strip()
    args = agent_args(server, token, "k3sim-agent-gone", "-d", str(tmp_path / "data"))
    with running(k3s_binary, tmp_path, args, ready="Annotations and labels have been set successfully"):
        pass  # the agent stops here
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        node = wait_node(server, "k3sim-agent-gone")
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        if ready["status"] == "Unknown":
            break
        time.sleep(0.5)
    assert ready["status"] == "Unknown"
    assert ready["reason"] == "NodeStatusUnknown"
    assert ready["message"] == "Kubelet stopped posting node status."
    assert "NotReady" in kubectl(server, "get", "node", "k3sim-agent-gone") or "Unknown" in kubectl(
        server, "get", "node", "k3sim-agent-gone"
    )
    keys = {(t["key"], t["effect"]) for t in node["spec"]["taints"]}
    assert ("node.kubernetes.io/unreachable", "NoExecute") in keys


def test_kubectl_apply_wait_explain_and_strict_fields(server: Process, tmp_path: Path) -> None:
    manifest = tmp_path / "ns.yaml"
    manifest.write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: k3sim-apply\n  labels: {a: b}\n")
    assert kubectl(server, "apply", "-f", str(manifest)).strip() == "namespace/k3sim-apply created"
    assert kubectl(server, "apply", "-f", str(manifest)).strip() == "namespace/k3sim-apply unchanged"
    manifest.write_text(manifest.read_text().replace("a: b", "a: c"))
    assert kubectl(server, "apply", "-f", str(manifest)).strip() == "namespace/k3sim-apply configured"
    assert "a=c" in kubectl(server, "get", "namespace", "k3sim-apply", "--show-labels")
    manifest.write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: k3sim-bad\n  bogus: 1\n")
    result = run_kubectl(server.root / "k3s.yaml", "apply", "-f", str(manifest), check=False)
    assert result.returncode == 1
    assert 'strict decoding error: unknown field "metadata.bogus"' in result.stderr
    out = kubectl(server, "wait", "--for=condition=Ready", "node/k3sim-server", "--timeout=10s")
    assert out.strip() == "node/k3sim-server condition met"
    assert "FIELD: taints <[]Taint>" in kubectl(server, "explain", "node.spec.taints")


def test_agent_restart_keeps_labels_and_transition_refreshes_heartbeat(
    k3s_binary: Path, server: Process, tmp_path: Path
) -> None:
    token = (server.data / "server" / "token").read_text().strip()
    first = agent_args(
        server, token, "k3sim-agent-again", "--node-label", "tier=a", "-d", str(tmp_path / "data")
    )
    ready_line = "Annotations and labels have been set successfully"
    with running(k3s_binary, tmp_path, first, ready=ready_line):
        before = wait_node(server, "k3sim-agent-again")
    time.sleep(1.1)
    second = [*first[:-4], "--node-label", "tier=b", "-d", str(tmp_path / "data")]
    with running(k3s_binary, tmp_path, second, ready=ready_line):
        after = wait_node(server, "k3sim-agent-again")
        lease = json.loads(
            kubectl(server, "get", "lease", "-n", "kube-node-lease", "k3sim-agent-again", "-o", "json")
        )

    def ready(node: dict[str, Any]) -> dict[str, str]:
        return next(c for c in node["status"]["conditions"] if c["type"] == "Ready")

    assert after["metadata"]["labels"]["tier"] == "a"  # node-label applies at registration only
    if "Node k3sim-agent-again is NotReady" in server.log():
        # the restart took longer than the 4 s grace period: Unknown, then Ready again is a new transition
        assert ready(after)["lastTransitionTime"] > ready(before)["lastTransitionTime"]
    else:
        assert ready(after)["lastTransitionTime"] == ready(before)["lastTransitionTime"]
    assert ready(after)["lastHeartbeatTime"] > ready(before)["lastHeartbeatTime"]
    assert lease["spec"]["holderIdentity"] == "k3sim-agent-again"
    assert lease["spec"]["leaseDurationSeconds"] == 4


def test_bare_secret_joins_with_k3s_warning(k3s_binary: Path, server: Process, tmp_path: Path) -> None:
    secret = TOKEN.match((server.data / "server" / "token").read_text())["secret"]  # type: ignore[index]
    args = agent_args(server, secret, "k3sim-agent-bare", "-d", str(tmp_path / "data"))
    with running(
        k3s_binary, tmp_path, args, ready="Annotations and labels have been set successfully"
    ) as agent:
        log = agent.log()
    assert (
        'level=warning msg="Cluster CA certificate is not trusted by the host CA bundle, but the token '
        "does not include a CA hash. Use the full token from the server's node-token file to enable "
        'Cluster CA validation."'
    ) in log
    assert "Cluster CA certificate is not trusted" not in server.log()
    kubectl(server, "delete", "node", "k3sim-agent-bare")


def test_kubectl_describe_node_shows_kubelet_events(server: Process) -> None:
    described = kubectl(server, "describe", "node", "k3sim-server")
    assert "Non-terminated Pods:          (0 in total)" in described
    events = described.split("Events:", 1)[1]
    assert re.search(r"Normal\s+Starting\s+\S+\s+kubelet\s+Starting kubelet\.", events)
    assert re.search(
        r"Normal\s+NodeReady\s+\S+\s+kubelet\s+Node k3sim-server status is now: NodeReady", events
    )
    rows = kubectl(server, "get", "events", "-n", "default").splitlines()
    assert rows[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert any("node/k3sim-server" in row for row in rows[1:])


def test_with_node_id_keeps_its_name_across_restarts(
    k3s_binary: Path, server: Process, tmp_path: Path
) -> None:
    token = (server.data / "server" / "token").read_text().strip()
    args = agent_args(server, token, "k3sim-agent-id", "--with-node-id", "-d", str(tmp_path / "data"))
    names = []
    for _ in range(2):
        with running(
            k3s_binary, tmp_path, args, ready="Annotations and labels have been set successfully"
        ) as agent:
            names.append(re.findall(r"successfully on node: (\S+)\"", agent.log())[-1])
    assert re.fullmatch(r"k3sim-agent-id-[0-9a-f]{8}", names[0])
    assert names[0] == names[1]
    kubectl(server, "delete", "node", names[0])


def test_python_client_watch_sees_a_label_change(server: Process) -> None:
    api = api_client(server)
    listed = api.list_node(field_selector="metadata.name=k3sim-server")
    stream = kubernetes.watch.Watch().stream(
        api.list_node,
        field_selector="metadata.name=k3sim-server",
        resource_version=listed.metadata.resource_version,
        timeout_seconds=3,  # the server ends the stream then; leaving it early waits for that
    )
    api.patch_node("k3sim-server", {"metadata": {"labels": {"gorkheavy.io/watched": "yes"}}})
    for event in stream:
        if (event["object"].metadata.labels or {}).get("gorkheavy.io/watched") == "yes":
            assert event["type"] == "MODIFIED"
            break
    else:
        pytest.fail("no MODIFIED event for the label change")
