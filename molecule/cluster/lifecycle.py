"""Life-cycle checks of the cluster stage on the converged hosts of the scenario `cluster_lifecycle`, run in
order by side_effect.yml.

Each test runs playbooks/cluster.yml (or playbooks/reset.yml) as an operator would, with the scenario's
inventory, and then looks at the hosts over SSH: service PIDs, files, the journal, the API through the real
kubectl. The tests depend on their order (one sequence, from the converged v1.36.3+k3s1 cluster to
v1.36.4+k3s1); pytest runs them top to bottom and -x stops at the first failure. The last ones remove K3s with
reset.yml and install it again without a token (K3s generates one); molecule's verify step checks that.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import (
    AGENT_1,
    AGENT_2,
    HOSTS,
    INVENTORY,
    NEW,
    OLD,
    PROJECT,
    RUN_DIR,
    SERVER,
    Run,
    ansible_playbook,
    connect,
    in_molecule,
    node,
    pid,
    playbook,
    sh,
    state,
)

pytestmark = in_molecule


@pytest.fixture(scope="module")
def hosts() -> dict[str, Any]:
    return connect()


@pytest.fixture
def block_api_port(hosts: dict[str, Any]) -> Iterator[str]:
    """Make the server drop new connections from agent-2 to port 6443, as a firewall in between would."""
    agent_ip = str(hosts[AGENT_2].ansible.get_variables()["ansible_host"])
    rule = f"INPUT -p tcp --dport 6443 -s {agent_ip} -m conntrack --ctstate NEW -j DROP"
    sh(hosts[SERVER], f"iptables -I {rule}")
    try:
        yield agent_ip
    finally:
        sh(hosts[SERVER], f"iptables -D {rule}")


@pytest.fixture
def port_6443_taken(hosts: dict[str, Any]) -> Iterator[None]:
    """Stop K3s on the server and let another program listen on 6443, so that K3s cannot start its API."""
    server = hosts[SERVER]
    # The agents hold watches open on the server: K3s ends them and stops within seconds, not a minute.
    started = time.monotonic()
    sh(server, "systemctl stop k3s.service")
    took = time.monotonic() - started
    assert took < 20, f"systemctl stop k3s.service took {took:.0f} s with the agents joined"
    sh(
        server,
        "systemd-run --unit=gorkheavy-cluster-port-taker --property=Type=simple "
        "python3 -c 'import socket, time; s = socket.socket(); "
        's.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 6443)); s.listen(); '
        "time.sleep(3600)'",
    )
    try:
        yield
    finally:
        server.run("sudo -n systemctl stop gorkheavy-cluster-port-taker.service")
        sh(server, "systemctl start --no-block k3s.service")
        # The next test needs the server up: Type=notify, so "active" means K3s told systemd it is ready.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if server.run("systemctl is-active k3s.service").stdout.strip() == "active":
                break
            time.sleep(0.5)
        else:
            pytest.fail("k3s.service did not become active again after port 6443 was freed")


def test_an_agent_that_cannot_reach_port_6443_is_named_with_the_address(
    hosts: dict[str, Any], block_api_port: str
) -> None:
    server_ip = str(hosts[SERVER].ansible.get_variables()["ansible_host"])
    before = state(hosts)
    run = playbook("--limit", AGENT_2, extra={"gorkheavy_k3s_connect_timeout": 5})
    assert run.rc != 0, run.tail()
    assert f"{AGENT_2} cannot reach the K3s server at {server_ip}:6443" in run.flat, run.tail()
    assert f"Nothing was changed on {AGENT_2}" in run.flat
    assert run.changed() == {AGENT_2: 0}
    assert state(hosts)[AGENT_2] == before[AGENT_2]


def test_a_server_that_never_becomes_ready_is_reported_with_its_journal(
    hosts: dict[str, Any], port_6443_taken: None
) -> None:
    run = playbook("--limit", SERVER, extra={"gorkheavy_k3s_ready_timeout": 15})
    assert run.rc != 0, run.tail()
    assert f"The K3s server on {SERVER} did not become ready within 15 s" in run.flat, run.tail()
    assert "Last 50 lines of k3s.service's journal" in run.output
    assert "6443" in run.output.split("Last 50 lines of k3s.service's journal")[1]


def test_a_wrong_token_fails_with_the_agents_journal_line(hosts: dict[str, Any]) -> None:
    wrong = "K10" + "0" * 64 + "::server:not-the-secret"
    run = playbook(
        "--limit", AGENT_2, extra={"gorkheavy_k3s_agent_token": wrong, "gorkheavy_k3s_ready_timeout": 20}
    )
    assert run.rc != 0, run.tail()
    assert f"{AGENT_2} ({AGENT_2}) did not become a Ready node within 20 s" in run.flat, run.tail()
    assert "token CA hash does not match the Cluster CA certificate hash" in run.flat, run.tail()
    assert "Last 50 lines of k3s-agent.service's journal" in run.output
    assert wrong not in run.output
    # The next run (the upgrade) gives agent-2 the right token again; the upgrade test sees it rejoin.


def test_an_upgrade_goes_one_node_at_a_time_each_ready_before_the_next(hosts: dict[str, Any]) -> None:
    # agent-2 still has the wrong token of the previous test: this run also writes the right one, and agent-2
    # must rejoin with it (a Ready node of the new release).
    before = state(hosts)
    assert "not-the-secret" in sh(hosts[AGENT_2], "cat /etc/rancher/k3s/join-token")
    run = playbook(extra={"gorkheavy_k3s_version": NEW})
    assert run.rc == 0, run.tail()
    assert "not-the-secret" not in sh(hosts[AGENT_2], "cat /etc/rancher/k3s/join-token")
    after = state(hosts)
    for name in HOSTS:
        assert pid(after, name) != pid(before, name), f"{name} was not restarted"
        assert NEW in sh(hosts[name], "/usr/local/bin/k3s --version")
    started = [int(after[name]["ExecMainStartTimestampMonotonic"]) for name in HOSTS]
    assert started == sorted(started), f"restart order was not server, agent-1, agent-2: {started}"
    # The agents come one per batch, and each batch waits for its node to be Ready before the next begins.
    batches = run.output.split("PLAY [Join the K3s agents]")[1:]
    assert len(batches) == 2, "the agent play did not run in two batches"
    for batch, name in zip(batches, (AGENT_1, AGENT_2), strict=True):
        install = batch.index("TASK [gorkheavy.lite.k3s_agent : Install the K3s binary]")
        ready = batch.index("Wait until the API lists the node as Ready", install)
        assert f"changed: [{name}]" in batch[install:ready]
        assert f"ok: [{name}" in batch[ready:]
    for name in HOSTS:
        assert node(name)["status"]["nodeInfo"]["kubeletVersion"] == NEW
        conditions = {c["type"]: c["status"] for c in node(name)["status"]["conditions"]}
        assert conditions["Ready"] == "True", name


def test_a_downgrade_is_refused_before_anything_changes(hosts: dict[str, Any]) -> None:
    before = state(hosts)
    run = playbook(extra={"gorkheavy_k3s_version": OLD})
    assert run.rc != 0, run.tail()
    assert f"runs K3s {NEW}, newer than {OLD} (gorkheavy_k3s_version)" in run.flat, run.tail()
    assert "K3s does not support downgrades" in run.flat
    assert "PLAY [Install the K3s server]" not in run.output
    assert state(hosts) == before


# Removal, then a fresh install with a token K3s generates.
RESET = PROJECT / "playbooks" / "reset.yml"
INSTALLED = [
    "/usr/local/bin/k3s",
    "/etc/rancher/k3s/config.yaml",
    "/var/lib/rancher/k3s",
    "/var/lib/gorkheavy-lite/k3s",
    "/etc/rancher/node",
]
# Files of the prepare stage and of the operator that the removal must leave alone.
KEPT = ["/etc/sysctl.d/90-k3s.conf", "/etc/modules-load.d/k3s.conf", "/etc/rancher/k3s/registries.yaml"]


def reset(*args: str) -> Run:
    """Run playbooks/reset.yml on the nodes only (its VM play has no hosts under this --limit)."""
    return ansible_playbook(["-i", str(INVENTORY), "--limit", "k3s_cluster", *args, str(RESET)], timeout=600)


def present(host: Any, paths: list[str]) -> list[str]:
    return [p for p in paths if host.run("sudo -n test -e %s", p).rc == 0]


def test_reset_without_confirmation_removes_nothing(hosts: dict[str, Any]) -> None:
    run = reset()
    assert run.rc != 0, run.tail()
    assert "Run it again with -e gorkheavy_reset_confirm=yes" in run.flat
    for name, host in hosts.items():
        assert present(host, INSTALLED) == INSTALLED, name


def test_reset_removes_k3s_and_only_what_the_collection_installed(hosts: dict[str, Any]) -> None:
    for host in hosts.values():
        sh(host, "mkdir -p /etc/rancher/k3s && touch /etc/rancher/k3s/registries.yaml")
    run = reset("-e", "gorkheavy_reset_confirm=yes")
    assert run.rc == 0, run.tail()
    assert all(run.changed()[name] > 0 for name in HOSTS), run.changed()
    for name, host in hosts.items():
        assert present(host, INSTALLED) == [], name
        for unit in ("k3s.service", "k3s-agent.service"):
            assert host.run("sudo -n test -e /etc/systemd/system/%s", unit).rc != 0
            assert host.run("systemctl is-active %s", unit).stdout.strip() != "active"
        assert present(host, KEPT) == KEPT, name
        assert "/usr/local/bin/k3s" not in host.run("ps -eo args").stdout
    assert not (RUN_DIR / "kubeconfig.yaml").exists()
    # A second removal finds nothing to do.
    again = reset("-e", "gorkheavy_reset_confirm=yes")
    assert again.rc == 0, again.tail()
    assert again.changed() == dict.fromkeys(HOSTS, 0), again.changed()
    assert again.failed() == dict.fromkeys(HOSTS, 0), again.failed()


def _home_kubeconfig() -> bytes | None:
    path = Path.home() / ".kube" / "config"
    return path.read_bytes() if path.exists() else None


def test_without_a_token_k3s_generates_one_and_the_agents_join_with_it(hosts: dict[str, Any]) -> None:
    home_kubeconfig = _home_kubeconfig()
    run = playbook(extra={"gorkheavy_k3s_version": NEW, "gorkheavy_k3s_token": ""})
    assert run.rc == 0, run.tail()
    # The last message names the fetched kubeconfig to export; ~/.kube/config is left alone.
    last_task = " ".join(run.output.rsplit("TASK [", 1)[1].split())
    assert f"export KUBECONFIG={RUN_DIR / 'kubeconfig.yaml'}" in last_task, run.tail()
    assert _home_kubeconfig() == home_kubeconfig
    generated = sh(hosts[SERVER], "cat /var/lib/rancher/k3s/server/token").strip()
    assert generated.startswith("K10")
    assert hosts[SERVER].run("sudo -n test -e /etc/rancher/k3s/cluster-token").rc != 0
    assert "token-file" not in yaml.safe_load(sh(hosts[SERVER], "cat /etc/rancher/k3s/config.yaml"))
    for name in (AGENT_1, AGENT_2):
        assert sh(hosts[name], "cat /etc/rancher/k3s/join-token").strip() == generated
    for name in HOSTS:
        conditions = {c["type"]: c["status"] for c in node(name)["status"]["conditions"]}
        assert conditions["Ready"] == "True", name
    assert generated not in run.output
