"""Life-cycle checks of the cluster stage on the converged molecule hosts, run in order by side_effect.yml.

Each test runs playbooks/cluster.yml (or playbooks/reset.yml) as an operator would, with the scenario's
inventory, and then looks at the hosts over SSH: service PIDs, files, the journal, the API through the real
kubectl. The tests depend on their order (one sequence, from the converged v1.36.3+k3s1 cluster to
v1.36.4+k3s1); pytest runs them top to bottom and -x stops at the first failure. The last ones remove K3s with
reset.yml and install it again without a token (K3s generates one); molecule's verify step checks that.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import testinfra
import yaml

RUN_DIR = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"))
PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[2]))
INVENTORY = RUN_DIR / "inventory"
PLAYBOOK = PROJECT / "playbooks" / "cluster.yml"
BIN = Path(sys.executable).parent
SERVER = "gorkheavy-cluster-server"
AGENT_1 = "gorkheavy-cluster-agent-1"
AGENT_2 = "gorkheavy-cluster-agent-2"
HOSTS = (SERVER, AGENT_1, AGENT_2)
UNITS = {SERVER: "k3s.service", AGENT_1: "k3s-agent.service", AGENT_2: "k3s-agent.service"}
OLD, NEW = "v1.36.3+k3s1", "v1.36.4+k3s1"
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)
# Labels of agent-1 from the label test on: every later run keeps them (an extra inventory source).
LABELS = {"gorkheavy.lite/models": "true", "gorkheavy.lite/pool": "a"}

pytestmark = pytest.mark.skipif(not RUN_DIR.is_dir(), reason="runs inside molecule's cluster scenario")


def _token() -> str:
    vars_file = Path(__file__).with_name("inventory") / "group_vars" / "k3s_cluster" / "cluster.yml"

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))  # type: ignore[arg-type]
    return str(yaml.load(vars_file.read_text(), Loader=Loader)["gorkheavy_k3s_token"])


class Run:
    def __init__(self, done: subprocess.CompletedProcess[str]) -> None:
        self.rc = done.returncode
        self.output = done.stdout + done.stderr
        self.flat = " ".join(self.output.split())

    def _recap(self, column: int) -> dict[str, int]:
        found = {m[0]: int(m[column]) for m in RECAP.findall(self.output)}
        assert found, f"no PLAY RECAP lines in the output:\n{self.tail()}"
        return found

    def changed(self) -> dict[str, int]:
        return self._recap(2)

    def failed(self) -> dict[str, int]:
        return self._recap(4)

    def tail(self) -> str:
        return self.output[-5000:]


def ansible_playbook(argv: list[str], timeout: int = 900) -> Run:
    """Run ansible-playbook as an operator would, with the project's configuration and plain output.

    Molecule exports ANSIBLE_FORCE_COLOR=1 when its own output is coloured (TERM=xterm*, a terminal), and
    Ansible lets ANSIBLE_FORCE_COLOR win over ANSIBLE_NOCOLOR: the recap would then carry colour codes between
    the host and "ok=", and RECAP would find nothing. Both are therefore set here.
    """
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(PROJECT / "collections"),
        "ANSIBLE_ROLES_PATH": str(PROJECT / "roles"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(RUN_DIR / "ssh-control"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    done = subprocess.run(
        [str(BIN / "ansible-playbook"), *argv],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Run(done)


def playbook(*args: str, extra: dict[str, Any] | None = None, labels: bool = True) -> Run:
    """Run playbooks/cluster.yml against the scenario's hosts."""
    argv = ["-i", str(INVENTORY)]
    if labels:
        extra_inventory = RUN_DIR / "lifecycle-labels.yml"
        extra_inventory.write_text(
            yaml.safe_dump({"all": {"hosts": {AGENT_1: {"gorkheavy_k3s_agent_labels": LABELS}}}})
        )
        argv += ["-i", str(extra_inventory)]
    if extra:
        extra_file = RUN_DIR / "lifecycle-extra.json"
        extra_file.write_text(json.dumps(extra))
        argv += ["-e", f"@{extra_file}"]
    return ansible_playbook([*argv, *args, str(PLAYBOOK)])


def connect() -> dict[str, Any]:
    """testinfra hosts for the scenario's three hosts, over SSH as the admin user."""
    inventory = INVENTORY / "ansible_inventory.yml"
    return {name: testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}") for name in HOSTS}


@pytest.fixture(scope="module")
def hosts() -> dict[str, Any]:
    return connect()


def sh(host: Any, command: str) -> str:
    done = host.run("sudo -n sh -c %s", command)
    assert done.rc == 0, f"{command!r}: {done.stderr}"
    return str(done.stdout)


def state(hosts: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Per host: the service's main PID and start time, and the sha256 of every file the roles install."""
    out: dict[str, dict[str, str]] = {}
    for name, host in hosts.items():
        unit = UNITS[name]
        show = sh(host, f"systemctl show --property=MainPID,ExecMainStartTimestampMonotonic {unit}")
        files = sh(
            host,
            "sha256sum /usr/local/bin/k3s /etc/rancher/k3s/config.yaml /etc/systemd/system/"
            + unit
            + " /etc/rancher/k3s/"
            + ("cluster-token" if name == SERVER else "join-token"),
        )
        out[name] = {**dict(line.split("=", 1) for line in show.split()), "files": files}
    return out


def pid(snapshot: dict[str, dict[str, str]], name: str) -> str:
    value = snapshot[name]["MainPID"]
    assert value not in ("", "0"), f"{name}: {UNITS[name]} is not running"
    return value


def kubectl(*args: str) -> str:
    done = subprocess.run(
        [str(BIN / "kubectl"), *args],
        env={**os.environ, "KUBECONFIG": str(RUN_DIR / "kubeconfig.yaml")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def node(name: str) -> dict[str, Any]:
    return json.loads(kubectl("get", "node", name, "-o", "json"))  # type: ignore[no-any-return]


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


def test_a_rerun_at_vvv_changes_nothing_restarts_nothing_and_never_shows_the_token(
    hosts: dict[str, Any],
) -> None:
    before = state(hosts)
    run = playbook("-vvv", labels=False)
    assert run.rc == 0, run.tail()
    assert run.changed() == dict.fromkeys(HOSTS, 0), run.changed()
    after = state(hosts)
    for name in HOSTS:
        assert pid(after, name) == pid(before, name), f"{UNITS[name]} on {name} was restarted"
        assert after[name] == before[name]
    token = _token()
    # The whole token and every piece of it around one of its special characters (plain words such as "token"
    # appear in task names).
    words = re.split(r"([%$:\\]+)", token)
    secret_parts = [token, *("".join(words[i : i + 3]) for i in range(0, len(words) - 2, 2))]
    # Also as JSON or Python would escape them in a result.
    secret_parts += [json.dumps(part)[1:-1] for part in secret_parts] + [repr(token)[1:-1]]
    leaked = sorted({part for part in secret_parts if part in run.output})
    assert not leaked, f"the token (or a part of it) is in the -vvv output: {leaked}"
    # The server wrote the token in K3s's secure form, with the operator's secret after "::server:".
    stored = sh(hosts[SERVER], "cat /var/lib/rancher/k3s/server/token").strip()
    assert re.fullmatch(r"K10[0-9a-f]{64}::server:.+", stored)
    assert stored.endswith("::server:" + token)
    assert stored not in run.output
    # The operator's token reached the server only in its root-only file, byte for byte.
    assert sh(hosts[SERVER], "stat -c '%U %G %a' /etc/rancher/k3s/cluster-token").strip() == "root root 600"
    assert sh(hosts[SERVER], "cat /etc/rancher/k3s/cluster-token") == token + "\n"
    for name in (AGENT_1, AGENT_2):
        assert sh(hosts[name], "cat /etc/rancher/k3s/join-token").strip() == stored


def test_a_wrong_checksum_stops_the_run_before_any_node_changes(hosts: dict[str, Any]) -> None:
    good = RUN_DIR / f"k3s-{OLD}"
    bad = RUN_DIR / "k3s-tampered"
    shutil.rmtree(bad, ignore_errors=True)
    shutil.copytree(good, bad)
    with (bad / "k3s").open("ab") as binary:
        binary.write(b"\n# tampered\n")
    sums = dict(line.split()[::-1] for line in (bad / "sha256sum-amd64.txt").read_text().splitlines())
    actual = subprocess.run(
        ["sha256sum", str(bad / "k3s")], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    before = state(hosts)
    run = playbook(extra={"gorkheavy_k3s_airgap_dir": str(bad)})
    assert run.rc != 0, run.tail()
    assert f"{bad}/k3s has sha256 {actual}, but sha256sum-amd64.txt says {sums['k3s']}" in run.flat, (
        run.tail()
    )
    assert "PLAY [Install the K3s server]" not in run.output
    assert set(run.changed().values()) == {0}, run.changed()
    assert state(hosts) == before


def test_a_changed_label_restarts_only_its_node(hosts: dict[str, Any]) -> None:
    before = state(hosts)
    run = playbook(labels=True)
    assert run.rc == 0, run.tail()
    changed = run.changed()
    assert changed[SERVER] == 0, changed
    assert changed[AGENT_2] == 0, changed
    assert changed[AGENT_1] > 0, changed
    # No agent is upgraded: the agents go in one batch.
    assert run.output.count("PLAY [Join the K3s agents]") == 1, run.tail()
    after = state(hosts)
    assert pid(after, AGENT_1) != pid(before, AGENT_1), "agent-1 kept its process"
    assert pid(after, SERVER) == pid(before, SERVER), "the server was restarted"
    assert pid(after, AGENT_2) == pid(before, AGENT_2), "agent-2 was restarted"
    config = yaml.safe_load(sh(hosts[AGENT_1], "cat /etc/rancher/k3s/config.yaml"))
    assert sorted(config["node-label"]) == ["gorkheavy.lite/models=true", "gorkheavy.lite/pool=a"]
    # K3s applies node-label only at registration; the role set it on the existing Node through the API.
    assert node(AGENT_1)["metadata"]["labels"]["gorkheavy.lite/pool"] == "a"
    assert "gorkheavy.lite/pool" not in node(AGENT_2)["metadata"]["labels"]


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
    # agent-2 still has the wrong token of the previous test: this run also writes the right one, and agent-2 must
    # rejoin with it (a Ready node of the new release).
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
