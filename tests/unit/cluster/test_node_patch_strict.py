"""The label and taint patch of roles/k3s_common/tasks/node.yml, run by ansible-playbook on this machine
against a K3s stand-in server: it asks for fieldValidation=Strict, so the API refuses a patch with an unknown
field (the apiserver's default, Warn, would drop the field and answer 200), and the play stops with the API's
error.

The role reaches the API at 127.0.0.1:6443 with the certificates K3s writes under /var/lib/rancher; extra vars
point those two role variables at the stand-in's port and data directory, nothing else is changed.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gorkheavy_lab.k3s.testing import Process, build_artifact, free_port, kubectl, running, server_args

from tests.unit.cluster.playbook import LOCAL, run_playbook

NODE = "k3sim-patch"
LABEL = "gorkheavy.lite/models"
TAINT = "gorkheavy.lite/patch=true:NoSchedule"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    binary = build_artifact(tmp_path_factory.mktemp("k3s-artifact"))
    root = tmp_path_factory.mktemp("k3s-server")
    port = free_port()
    args = server_args(root, port, NODE, "--write-kubeconfig", str(root / "k3s.yaml"))
    with running(binary, root, args, ready="Annotations and labels have been set successfully") as process:
        process.port = port  # type: ignore[attr-defined]
        yield process


def _node(server: Process) -> dict[str, Any]:
    out = kubectl(server.root / "k3s.yaml", "get", "node", NODE, "-o", "json").stdout
    node: dict[str, Any] = json.loads(out)
    return node


def _play(server: Process, tmp: Path, extra: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    play = [
        {
            "hosts": "srv",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Label and taint the node as the roles do",
                    "ansible.builtin.include_role": {
                        "name": "gorkheavy.lite.k3s_common",
                        "tasks_from": "node",
                    },
                    "vars": {
                        "k3s_common_node_name": NODE,
                        "k3s_common_api_delegate": "srv",
                        "k3s_common_node_labels": {LABEL: "true"},
                        "k3s_common_node_taints": [TAINT],
                        "k3s_common_ready_timeout": 20,
                        "k3s_common_unit": "k3s.service",
                    },
                }
            ],
        }
    ]
    (tmp / "play.json").write_text(json.dumps(play))
    api = {
        "__k3s_common_api": f"https://127.0.0.1:{server.port}",  # type: ignore[attr-defined]
        "__k3s_common_tls": str(server.data / "server" / "tls"),
    }
    inventory = {"all": {"hosts": {"srv": LOCAL}}}
    return run_playbook(tmp, tmp / "play.json", inventory, {**api, **extra}, timeout=180)


def test_an_unknown_field_in_the_roles_patch_is_refused_and_nothing_applied(
    server: Process, tmp_path: Path
) -> None:
    # The exact request the role sends, with a misspelt field ("taint") in its body.
    refused = "gorkheavy.lite/refused"
    patch = {
        "metadata": {"labels": {refused: "true"}},
        "spec": {"taint": [{"key": "k", "effect": "NoSchedule"}]},
    }
    run = _play(server, tmp_path, {"__k3s_common_node_patch": patch})
    out = " ".join((run.stdout + run.stderr).split())
    assert run.returncode != 0, out[-3000:]
    assert f"The API on srv refused the labels and taints of {NODE} (srv): 400" in out, out[-3000:]
    assert 'strict decoding error: unknown field "spec.taint"; the patch was' in out, out[-3000:]
    assert refused not in _node(server)["metadata"]["labels"]


def test_the_roles_patch_labels_and_taints_the_node(server: Process, tmp_path: Path) -> None:
    run = _play(server, tmp_path, {})
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    node = _node(server)
    assert node["metadata"]["labels"][LABEL] == "true"
    assert {"key": "gorkheavy.lite/patch", "value": "true", "effect": "NoSchedule"} in node["spec"]["taints"]
