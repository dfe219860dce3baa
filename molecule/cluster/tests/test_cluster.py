"""What an operator checks after the cluster stage: units, files, modes, the nodes through the real kubectl.

The verify step of both cluster scenarios, on the install their side_effect left: in `cluster` v1.36.3+k3s1
with the operator's token (install_checks.py), in `cluster_lifecycle` v1.36.4+k3s1 with a token K3s
generated (lifecycle.py's last step); in both agent-1 has the extra label gorkheavy.lite/pool=a. The scenario
says which in CLUSTER_EXPECT_VERSION and CLUSTER_EXPECT_TOKEN (molecule.yml). testinfra connects as the admin
user over SSH and reads root-only files through sudo.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).parents[1]))

from harness import AGENT_1, AGENT_2, EXPECT_TOKEN, EXPECT_VERSION, RUN_DIR, SERVER, kubectl, operator_token

KUBECONFIG = RUN_DIR / "kubeconfig.yaml"
VERSION = EXPECT_VERSION
CLUSTER = "gorkheavy-molecule"


def _vars(host: Any) -> dict[str, Any]:
    return host.ansible.get_variables()  # type: ignore[no-any-return]


def _is_server(host: Any) -> bool:
    return "k3s_server" in _vars(host)["group_names"]


def _unit(host: Any) -> str:
    return "k3s.service" if _is_server(host) else "k3s-agent.service"


def _root(host: Any, command: str) -> str:
    with host.sudo():
        return str(host.check_output(command))


def test_the_unit_is_ours_type_notify_running_enabled_and_holds_no_secret(host):
    unit = _unit(host)
    service = host.service(unit)
    assert service.is_running
    assert service.is_enabled
    shown = host.check_output(f"systemctl show --property=Type --property=ExecStart {unit}")
    props = dict(line.split("=", 1) for line in shown.splitlines())
    assert props["Type"] == "notify"
    kind = "server" if _is_server(host) else "agent"
    assert f"argv[]=/usr/local/bin/k3s {kind} ;" in props["ExecStart"]
    unit_file = host.file(f"/etc/systemd/system/{unit}")
    assert (unit_file.user, unit_file.group, unit_file.mode) == ("root", "root", 0o644)
    assert "Environment" not in unit_file.content_string


def test_the_binary_is_the_pinned_release_and_its_staged_copy_verifies(host):
    binary = host.file("/usr/local/bin/k3s")
    assert (binary.user, binary.mode) == ("root", 0o755)
    lines = host.check_output("/usr/local/bin/k3s --version").splitlines()
    assert lines[0].startswith(f"k3s version {VERSION} (")
    assert lines[1].startswith("go version go")
    stage = f"/var/lib/gorkheavy-lite/k3s/{VERSION}"
    assert _root(host, f"stat -c %a {stage}") == "700"
    assert "k3s: OK" in _root(
        host, f"sh -c 'cd {stage} && sha256sum --check --ignore-missing sha256sum-amd64.txt'"
    )
    # The previous release's staged assets were removed after the upgrade.
    assert _root(host, "ls /var/lib/gorkheavy-lite/k3s").split() == [VERSION]
    images = "/var/lib/rancher/k3s/agent/images/k3s-airgap-images-amd64.tar"
    assert _root(host, f"stat -c %a {images}") == "644"


def test_config_yaml_is_root_only_and_holds_the_settings_but_not_the_token(host):
    assert _root(host, "stat -c '%U %G %a' /etc/rancher/k3s/config.yaml") == "root root 600"
    config = yaml.safe_load(_root(host, "cat /etc/rancher/k3s/config.yaml"))
    address = str(_vars(host)["ansible_host"])
    assert config["node-ip"] == address
    assert "token" not in config
    if _is_server(host):
        assert address in config["tls-san"]
        assert config["write-kubeconfig-mode"] == "0600"
        assert config["disable"] == ["traefik", "servicelb"]
        assert config["flannel-backend"] == "vxlan"
        assert (config["cluster-cidr"], config["service-cidr"]) == ("10.42.0.0/16", "10.43.0.0/16")
        assert config["node-taint"] == ["node-role.kubernetes.io/control-plane:NoSchedule"]
        if EXPECT_TOKEN == "operator":
            assert config["token-file"] == "/etc/rancher/k3s/cluster-token"
        else:
            # No operator token in this install: no token file either (K3s generated the token).
            assert EXPECT_TOKEN == "generated", EXPECT_TOKEN
            assert "token-file" not in config
    else:
        assert config["server"].startswith("https://")
        assert config["server"].endswith(":6443")
        assert config["token-file"] == "/etc/rancher/k3s/join-token"
        assert "gorkheavy.lite/models=true" in config["node-label"]


def test_the_token_is_only_in_root_only_files_never_on_a_command_line_or_in_an_environment(host):
    # On the server: the token K3s generated and wrote; on an agent: the file the role wrote.
    token_file = "/var/lib/rancher/k3s/server/token" if _is_server(host) else "/etc/rancher/k3s/join-token"
    assert _root(host, f"stat -L -c '%U %G %a' {token_file}") == "root root 600"
    token = _root(host, f"cat {token_file}").strip()
    assert len(token) > 10
    if _is_server(host) and EXPECT_TOKEN == "operator":
        # The operator's secret follows "::server:" in K3s's secure form, and its own file is root-only.
        assert token.endswith("::server:" + operator_token())
        assert _root(host, "stat -c '%U %G %a' /etc/rancher/k3s/cluster-token") == "root root 600"
        assert _root(host, "cat /etc/rancher/k3s/cluster-token") == operator_token()
    if not _is_server(host):
        # Agents join with the server's token in K3s's secure form: the CA hash pins the cluster's CA.
        assert token.startswith("K10")
        assert "::server:" in token
    pid = host.check_output(f"systemctl show --property=MainPID --value {_unit(host)}")
    secrets = [token, operator_token()] if EXPECT_TOKEN == "operator" else [token]
    for secret in secrets:
        assert secret not in _root(host, "ps -eo args")
        assert secret not in _root(host, f"cat /proc/{pid}/environ")
        assert secret not in host.check_output(f"systemctl show --property=Environment {_unit(host)}")


def test_k3s_wrote_a_root_only_kubeconfig_and_its_token_on_the_server(host):
    if not _is_server(host):
        return
    assert _root(host, "stat -c '%U %a' /etc/rancher/k3s/k3s.yaml") == "root 600"
    assert _root(host, "stat -c %a /var/lib/rancher/k3s/server/token") == "600"
    assert _root(host, "cat /var/lib/rancher/k3s/server/token").startswith("K10")


def test_the_fetched_kubeconfig_is_renamed_pointed_at_the_server_and_private():
    assert KUBECONFIG.stat().st_mode & 0o777 == 0o600
    text = KUBECONFIG.read_text()
    config = yaml.safe_load(text)
    assert [c["name"] for c in config["clusters"]] == [CLUSTER]
    assert [u["name"] for u in config["users"]] == [CLUSTER]
    assert config["contexts"] == [{"name": CLUSTER, "context": {"cluster": CLUSTER, "user": CLUSTER}}]
    assert config["current-context"] == CLUSTER
    assert config["clusters"][0]["cluster"]["server"].endswith(":6443")
    assert "127.0.0.1" not in text
    assert config["users"][0]["user"]["client-certificate-data"]


def test_kubectl_sees_three_ready_nodes_with_their_addresses_taints_and_labels(host):
    nodes = {n["metadata"]["name"]: n for n in json.loads(kubectl("get", "nodes", "-o", "json"))["items"]}
    assert sorted(nodes) == sorted([SERVER, AGENT_1, AGENT_2])
    name = str(_vars(host)["inventory_hostname"])
    me = nodes[name]
    conditions = {c["type"]: c["status"] for c in me["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    addresses = {a["type"]: a["address"] for a in me["status"]["addresses"]}
    assert addresses["InternalIP"] == _vars(host)["ansible_host"]
    assert me["status"]["nodeInfo"]["kubeletVersion"] == VERSION
    labels = me["metadata"]["labels"]
    taints = [(t["key"], t["effect"]) for t in me["spec"].get("taints") or []]
    if _is_server(host):
        assert labels["node-role.kubernetes.io/control-plane"] == "true"
        assert ("node-role.kubernetes.io/control-plane", "NoSchedule") in taints
        assert "gorkheavy.lite/models" not in labels
    else:
        assert labels["gorkheavy.lite/models"] == "true"
        assert taints == []
        assert (labels.get("gorkheavy.lite/pool") == "a") == (name == AGENT_1)
    wide = kubectl("get", "nodes", "-o", "wide")
    row = next(line for line in wide.splitlines() if line.startswith(name + " "))
    assert row.split()[1] == "Ready"
    assert addresses["InternalIP"] in row.split()
    # The fetched kubeconfig points at the server's own address.
    server_ip = {a["type"]: a["address"] for a in nodes[SERVER]["status"]["addresses"]}["InternalIP"]
    assert (
        yaml.safe_load(KUBECONFIG.read_text())["clusters"][0]["cluster"]["server"]
        == f"https://{server_ip}:6443"
    )


def test_kubectl_reads_readyz_and_the_version():
    assert kubectl("get", "--raw", "/readyz").strip() == "ok"
    version = json.loads(kubectl("version", "-o", "json"))
    assert version["serverVersion"]["gitVersion"] == VERSION
    assert version["clientVersion"]["gitVersion"] == "v1.36.4"
