"""The built stand-in on three real systemd test hosts, installed as the roles install K3s: the release
assets checked with ``sha256sum -c`` on the node, ``/usr/local/bin/k3s``, ``Type=notify`` units, config.yaml
and a 0600 token file. A server and two agents join over podman's network; the real kubectl 1.36.4 on this
machine uses the fetched kubeconfig with the server's address; a wrong token shows K3s's journal line; a
stopped agent's node goes Unknown."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from gorkheavy_lab.k3s.build import build
from gorkheavy_lab.k3s.testing import kubectl as run_kubectl

from tests.hosts.systemd_host import SystemdHost, build_image

pytestmark = [pytest.mark.hosts, pytest.mark.slow]

# %, $, :, \ and quotes must survive config.yaml, the token file and the K10 form
SECRET = "k3sim%$:\\'\"secret"
REFUSED = (
    "Waiting to retrieve agent configuration; server is not ready: "
    "failed to retrieve configuration from server: not authorized"
)
FACTS: dict[str, str] = {}  # what the fixture saw while bringing the cluster up
UNIT = """[Unit]
Description=Lightweight Kubernetes
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
ExecStart=/usr/local/bin/k3s {command}
KillMode=process
Delegate=yes
Restart=always
RestartSec=5s
TimeoutStartSec=60

[Install]
WantedBy=multi-user.target
"""


def _install(host: SystemdHost, artifact: Path, unit: str, command: str, config: dict[str, object]) -> None:
    host.sh("mkdir -p /var/lib/k3s-artifact /etc/rancher/k3s")
    for name in ("k3s", "k3s-airgap-images-amd64.tar", "sha256sum-amd64.txt"):
        subprocess.run(
            ["podman", "cp", str(artifact / name), f"{host.name}:/var/lib/k3s-artifact/{name}"],
            check=True,
            capture_output=True,
            timeout=60,
        )
    host.sh(
        "set -e; cd /var/lib/k3s-artifact; sha256sum -c sha256sum-amd64.txt >/dev/null;"
        " install -m 0755 k3s /usr/local/bin/k3s;"
        " install -d /var/lib/rancher/k3s/agent/images;"
        " install -m 0644 k3s-airgap-images-amd64.tar /var/lib/rancher/k3s/agent/images/"
    )
    host.sh("umask 077; cat > /etc/rancher/k3s/config.yaml", stdin=yaml.safe_dump(config))
    host.sh(f"cat > /etc/systemd/system/{unit}", stdin=UNIT.format(command=command))
    host.sh("systemctl daemon-reload")


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SystemdHost, list[SystemdHost], Path]]:
    build_image()
    tmp = tmp_path_factory.mktemp("k3sim-hosts")
    artifact = tmp / "artifact"
    build(artifact, "v1.36.4+k3s1", "amd64")
    key = tmp / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    hosts: list[SystemdHost] = []
    try:
        with ThreadPoolExecutor(3) as pool:
            hosts = list(
                pool.map(
                    lambda p: SystemdHost.start(p, key.with_suffix(".pub")),
                    ["k3sim-server", "k3sim-agent", "k3sim-agent"],
                )
            )
        server, agents = hosts[0], hosts[1:]
        _install(
            server,
            artifact,
            "k3s.service",
            "server",
            {
                "token": SECRET,
                "write-kubeconfig-mode": "0644",
                "tls-san": [server.address],
                "node-taint": ["node-role.kubernetes.io/control-plane=true:NoSchedule"],
                "kube-controller-manager-arg": ["node-monitor-grace-period=6s"],
                # leases renewed every 2 s (a quarter of their duration), well inside the 6 s grace period
                "kubelet-arg": ["node-lease-duration-seconds=8"],
            },
        )
        for i, agent in enumerate(agents, 1):
            _install(
                agent,
                artifact,
                "k3s-agent.service",
                "agent",
                {
                    "server": f"https://{server.address}:6443",
                    "token-file": "/etc/rancher/k3s/token",
                    "node-label": ["gorkheavy.io/models=true", f"gorkheavy.io/slot={i}"],
                    "kubelet-arg": ["node-lease-duration-seconds=8"],
                },
            )
        server.sh("systemctl start k3s.service")  # returns once the stand-in sent READY=1
        token = server.sh("cat /var/lib/rancher/k3s/server/token").stdout
        # the first agent starts with a wrong secret: K3s's refusal must reach the journal, the unit stays
        # activating (no READY=1); then it gets the right token and joins
        agents[0].sh("umask 077; cat > /etc/rancher/k3s/token", stdin=token.rsplit(":", 1)[0] + ":wrong\n")
        agents[0].sh("systemctl start --no-block k3s-agent.service")
        _wait(lambda: REFUSED in _journal(agents[0], "k3s-agent"), 20)
        refused_state = agents[0].sh("systemctl show -p ActiveState --value k3s-agent.service").stdout.strip()
        for agent in agents:
            agent.sh("umask 077; cat > /etc/rancher/k3s/token", stdin=token)
        with ThreadPoolExecutor(2) as pool:  # each returns once its agent sent READY=1
            list(pool.map(lambda a: a.sh("systemctl restart k3s-agent.service"), agents))
        FACTS["refused_state"] = refused_state
        kubeconfig = yaml.safe_load(server.sh("cat /etc/rancher/k3s/k3s.yaml").stdout)
        kubeconfig["clusters"][0]["cluster"]["server"] = f"https://{server.address}:6443"
        path = tmp / "kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig))
        path.chmod(0o600)
        yield server, agents, path
    finally:
        for host in hosts:
            host.remove()


def _journal(host: SystemdHost, unit: str) -> str:
    return host.sh(f"journalctl -u {unit}.service --no-pager -o cat").stdout


def kubectl(kubeconfig: Path, *args: str) -> str:
    return run_kubectl(kubeconfig, *args).stdout


def _wait(check: Callable[[], bool], timeout: float = 40.0) -> None:
    # The deadlines are what an idle machine needs; the suite runs this module beside other tests, so
    # each gets three times as long. The condition is polled, so a healthy run waits no longer for it.
    deadline = time.monotonic() + 3 * timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError("condition not met in time")


def test_units_notify_and_files(cluster: tuple[SystemdHost, list[SystemdHost], Path]) -> None:
    server, _agents, _ = cluster
    show = server.sh("systemctl show -p Type,ActiveState,SubState k3s.service").stdout.split()
    assert show == ["Type=notify", "ActiveState=active", "SubState=running"]
    stat = server.sh(
        "stat -c '%a %U' /var/lib/rancher/k3s/server/token /etc/rancher/k3s/k3s.yaml"
    ).stdout.split()
    assert stat == ["600", "root", "644", "root"]
    token = server.sh("cat /var/lib/rancher/k3s/server/token").stdout.strip()
    ca_hash = server.sh("sha256sum /var/lib/rancher/k3s/server/tls/server-ca.crt").stdout.split()[0]
    assert token == f"K10{ca_hash}::server:{SECRET}"
    assert server.sh("readlink /var/lib/rancher/k3s/server/node-token").stdout.strip() == "token"
    journal = _journal(server, "k3s")
    assert 'level=info msg="k3s is up and running"' in journal
    assert "Importing images from /var/lib/rancher/k3s/agent/images/k3s-airgap-images-amd64.tar" in journal
    assert 'level=info msg="Imported docker.io/rancher/mirrored-pause:3.6"' in journal


def test_wrong_token_was_refused_with_k3s_journal_line(
    cluster: tuple[SystemdHost, list[SystemdHost], Path],
) -> None:
    _server, agents, _ = cluster
    assert f'level=info msg="{REFUSED}"' in _journal(agents[0], "k3s-agent")
    assert FACTS["refused_state"] == "activating"
    for agent in agents:
        assert agent.sh("systemctl show -p ActiveState --value k3s-agent.service").stdout.strip() == "active"
        assert 'level=info msg="k3s agent is up and running"' in _journal(agent, "k3s-agent")


def test_real_kubectl_sees_three_ready_nodes(cluster: tuple[SystemdHost, list[SystemdHost], Path]) -> None:
    server, agents, kubeconfig = cluster
    assert kubectl(kubeconfig, "get", "--raw", "/readyz") == "ok"
    version = kubectl(kubeconfig, "version")
    assert "Client Version: v1.36.4" in version
    assert "Server Version: v1.36.4+k3s1" in version
    rows = {
        line.split()[0]: line.split()
        for line in kubectl(kubeconfig, "get", "nodes", "-o", "wide").splitlines()[1:]
    }
    assert set(rows) == {server.name, *(a.name for a in agents)}
    assert rows[server.name][1:3] == ["Ready", "control-plane"]
    assert rows[server.name][5] == server.address
    for agent in agents:
        assert rows[agent.name][1:3] == ["Ready", "<none>"]
        assert rows[agent.name][5] == agent.address
        assert rows[agent.name][7:10] == ["Debian", "GNU/Linux", "12"]
    nodes = json.loads(kubectl(kubeconfig, "get", "nodes", "-l", "gorkheavy.io/models=true", "-o", "json"))
    assert sorted(n["metadata"]["name"] for n in nodes["items"]) == sorted(a.name for a in agents)
    taints = json.loads(kubectl(kubeconfig, "get", "node", server.name, "-o", "json"))["spec"]["taints"]
    assert taints == [
        {"key": "node-role.kubernetes.io/control-plane", "value": "true", "effect": "NoSchedule"}
    ]


def test_stopped_agent_goes_unknown(cluster: tuple[SystemdHost, list[SystemdHost], Path]) -> None:
    _server, agents, kubeconfig = cluster
    agents[1].sh("systemctl stop k3s-agent.service")

    def unknown() -> bool:
        node = json.loads(kubectl(kubeconfig, "get", "node", agents[1].name, "-o", "json"))
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        return ready["status"] == "Unknown"

    _wait(unknown, 30)
    assert kubectl(kubeconfig, "get", "node", agents[1].name).splitlines()[1].split()[1] == "Unknown"
    agents[1].sh("systemctl start k3s-agent.service")
    _wait(
        lambda: kubectl(kubeconfig, "get", "node", agents[1].name).splitlines()[1].split()[1] == "Ready", 30
    )
