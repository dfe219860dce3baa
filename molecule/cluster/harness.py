"""What the cluster scenarios' checks share: the scenario's hosts, running the playbooks as an operator
would, and looking at the hosts over SSH (service PIDs, files) and at the API through the real kubectl.

The scenarios `cluster` (install_checks.py) and `cluster_lifecycle` (lifecycle.py) each have three hosts of
their own; their names come from the inventory molecule wrote for the running scenario (its platforms).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
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


def _platforms() -> tuple[str, str, str]:
    """The server and the two agents of the running scenario, as molecule resolved its platforms' names."""
    inventory = INVENTORY / "ansible_inventory.yml"
    if not inventory.is_file():  # Not inside molecule: the checks are skipped (in_molecule).
        return "server", "agent-1", "agent-2"
    groups = yaml.safe_load(inventory.read_text())
    servers = sorted(groups.get("k3s_server", {}).get("hosts") or {})
    agents = sorted(groups.get("k3s_agents", {}).get("hosts") or {})
    assert len(servers) == 1, f"{inventory}: one host in k3s_server expected, found {servers}"
    assert len(agents) == 2, f"{inventory}: two hosts in k3s_agents expected, found {agents}"
    return servers[0], agents[0], agents[1]


SERVER, AGENT_1, AGENT_2 = _platforms()
HOSTS = (SERVER, AGENT_1, AGENT_2)
UNITS = {SERVER: "k3s.service", AGENT_1: "k3s-agent.service", AGENT_2: "k3s-agent.service"}
OLD, NEW = "v1.36.3+k3s1", "v1.36.4+k3s1"
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)
# Labels of agent-1 (an extra inventory source that playbook() passes unless told otherwise).
LABELS = {"gorkheavy.lite/models": "true", "gorkheavy.lite/pool": "a"}

# What verify expects of the scenario's last install (molecule.yml, provisioner env): the release, and whether
# the operator's token ("operator") or one K3s generated ("generated") is in use.
EXPECT_VERSION = os.environ.get("CLUSTER_EXPECT_VERSION", OLD)
EXPECT_TOKEN = os.environ.get("CLUSTER_EXPECT_TOKEN", "operator")

in_molecule = pytest.mark.skipif(not RUN_DIR.is_dir(), reason="runs inside molecule's cluster scenarios")


def operator_token() -> str:
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
