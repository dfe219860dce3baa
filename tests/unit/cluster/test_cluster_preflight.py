"""playbooks/cluster.yml stops in its read-only preflight play on bad settings and bad release files.

Every run here is a check-mode run (--check) against this machine over the local connection: nothing the
playbook does in check mode writes anything, and the preflight play only reads. The release assets are a small
stand-in executable with a correct or a wrong sha256sum-amd64.txt in an air-gap directory, exactly as the
release publishes them; the real install path on systemd hosts is covered by molecule/cluster. The last test
resolves the stage's default kubeconfig path, which molecule/cluster sets to a path of its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.cluster.playbook import BIN, LOCAL, ROOT, run_playbook

VERSION = "v1.36.4+k3s1"
# A token with the characters that broke other projects' token handling.
TOKEN = "gork%hea$vy:to\\ken::more$$%"

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="the stand-in assets are amd64")


def _airgap(tmp: Path, *, wrong_sum: bool = False, drop_binary: bool = False) -> Path:
    airgap = tmp / "airgap"
    airgap.mkdir()
    binary = airgap / "k3s"
    binary.write_text(f"#!/bin/sh\necho 'k3s version {VERSION} (0a1b2c3d)'\necho 'go version go1.24.6'\n")
    binary.chmod(0o755)
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()
    listed = ("0" * 64) if wrong_sum else digest
    (airgap / "sha256sum-amd64.txt").write_text(f"{listed}  k3s\n{'1' * 64}  k3s-airgap-images-amd64.tar\n")
    if drop_binary:
        binary.unlink()
    return airgap


def _run(tmp: Path, extra: dict[str, object], *verbosity: str) -> subprocess.CompletedProcess[str]:
    inventory = {
        "all": {
            "children": {
                "k3s_cluster": {
                    "children": {
                        "k3s_server": {"hosts": {"srv": LOCAL}},
                        "k3s_agents": {"hosts": {"ag1": LOCAL}},
                    }
                }
            }
        }
    }
    return run_playbook(
        tmp,
        ROOT / "playbooks" / "cluster.yml",
        inventory,
        {"gorkheavy_k3s_kubeconfig_path": str(tmp / "kc.yaml"), **extra},
        "--check",
        "--diff",
        *verbosity,
    )


def _stopped_in_preflight(run: subprocess.CompletedProcess[str]) -> str:
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-3000:]
    assert "PLAY [Check the cluster settings and the release before any node changes]" in out
    assert "PLAY [Install the K3s server]" not in out, "the run went past the preflight play"
    return " ".join(out.split())


def test_a_version_that_is_not_a_release_tag_stops_the_run(tmp_path: Path) -> None:
    airgap = _airgap(tmp_path)
    out = _stopped_in_preflight(
        _run(tmp_path, {"gorkheavy_k3s_version": "latest", "gorkheavy_k3s_airgap_dir": str(airgap)})
    )
    assert 'gorkheavy_k3s_version is "latest"; it must be an exact K3s release tag' in out
    assert "v1.<minor>.<patch>+k3s<n>" in out


def test_config_key_typos_name_the_key_and_the_closest_valid_one(tmp_path: Path) -> None:
    airgap = _airgap(tmp_path)
    out = _stopped_in_preflight(
        _run(
            tmp_path,
            {
                "gorkheavy_k3s_airgap_dir": str(airgap),
                "gorkheavy_k3s_server_extra_config": {"tls_san": ["k3s.lan"]},
                "gorkheavy_k3s_agent_extra_config": {"node-labels": ["a=b"]},
            },
        )
    )
    assert '"tls_san" is not a K3s option; the closest valid key is "tls-san"' in out
    assert '"node-labels" is not a K3s option; the closest valid key is "node-label"' in out
    assert "does not know" in out


def test_a_wrong_checksum_names_the_file_and_both_sums(tmp_path: Path) -> None:
    airgap = _airgap(tmp_path, wrong_sum=True)
    actual = hashlib.sha256((airgap / "k3s").read_bytes()).hexdigest()
    out = _stopped_in_preflight(_run(tmp_path, {"gorkheavy_k3s_airgap_dir": str(airgap)}))
    assert f"{airgap}/k3s has sha256 {actual}, but sha256sum-amd64.txt says {'0' * 64}" in out
    assert "stopping before the file is copied to any node" in out


def test_a_missing_asset_is_named(tmp_path: Path) -> None:
    airgap = _airgap(tmp_path, drop_binary=True)
    out = _stopped_in_preflight(_run(tmp_path, {"gorkheavy_k3s_airgap_dir": str(airgap)}))
    assert f"Missing on the controller: {airgap}/k3s." in out


def test_check_mode_previews_the_install_and_never_shows_the_token(tmp_path: Path) -> None:
    airgap = _airgap(tmp_path)
    run = _run(tmp_path, {"gorkheavy_k3s_airgap_dir": str(airgap), "gorkheavy_k3s_token": TOKEN}, "-vvv")
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    for fragment in (TOKEN, "gork%hea", "to\\ken", "to\\\\ken"):
        assert fragment not in out
    # The configuration's diff is shown and names the token file, not the token.
    assert "token-file: /etc/rancher/k3s/cluster-token" in out
    assert "node-taint:" in out
    # The last message says that nothing was written and where a real run writes the kubeconfig.
    recap = out.rindex("PLAY RECAP")
    last = " ".join(out[out.rindex("TASK [", 0, recap) : recap].split())
    assert last.startswith("TASK [Name the kubeconfig to export]"), last
    kubeconfig = tmp_path / "kc.yaml"
    assert (
        "Check mode: nothing was changed on the nodes and no kubeconfig was written; the diffs above show"
        " what would change. A run without --check writes the kubeconfig (mode 0600) to"
        f" {kubeconfig}, to be used with: export KUBECONFIG={kubeconfig}"
    ) in last
    assert "The cluster is up" not in out
    assert not kubeconfig.exists()


def test_the_kubeconfig_goes_beside_the_inventory_by_default(tmp_path: Path) -> None:
    """The cluster stage's default kubeconfig path (playbooks/vars/k3s.yml), as its plays resolve it."""
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    (inventory / "hosts.json").write_text(
        json.dumps({"all": {"children": {"k3s_server": {"hosts": {"srv": local}}}}})
    )
    show = tmp_path / "show.yml"
    show.write_text(
        json.dumps(
            [
                {
                    "hosts": "k3s_server",
                    "gather_facts": False,
                    "vars_files": [str(ROOT / "playbooks" / "vars" / "k3s.yml")],
                    "tasks": [
                        {"ansible.builtin.debug": {"msg": "path={{ k3s_server_kubeconfig_path | trim }}"}}
                    ],
                }
            ]
        )
    )
    run = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory / "hosts.json"), str(show)],
        cwd=ROOT,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"path={inventory}/kubeconfig-gorkheavy-lite.yaml" in run.stdout, run.stdout
