"""The K3s stand-in's server as a local process (one per test module) and the ensemble's apply path."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gorkheavy_lab.k3s.testing import Process, build_artifact, free_port, running

from tests.unit.ensemble.rendering import run_ansible

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, Path]]:
    binary = build_artifact(tmp_path_factory.mktemp("k3s-artifact"))
    root = tmp_path_factory.mktemp("k3s-server")
    kubeconfig = root / "k3s.yaml"
    args = [
        "server",
        "-d",
        str(root / "data"),
        "--https-listen-port",
        str(free_port()),
        "--node-name",
        "ens-server",
        "--node-ip",
        "127.0.0.1",
        "--write-kubeconfig",
        str(kubeconfig),
    ]
    with running(binary, root, args, ready="Annotations and labels have been set successfully") as process:
        yield process, kubeconfig


def run_ensemble(
    kubeconfig: Path, cache: Path, extra_vars: dict[str, Any], *extra: str
) -> subprocess.CompletedProcess[str]:
    wanted = {
        "gorkheavy_k3s_kubeconfig_path": str(kubeconfig),
        "orchestrator_artifact_hosts": [],
        "orchestrator_artifact_cache_dir": str(cache),
        **extra_vars,
    }
    args = [str(BIN / "ansible-playbook"), "-i", "inventory/example", "playbooks/ensemble.yml"]
    return run_ansible([*args, "-e", json.dumps(wanted), *extra])


def play(kubeconfig: Path, cache: Path, *extra: str, roster: list[Any] | None = None) -> str:
    extra_vars: dict[str, Any] = {"k8s_manifests_wait": False}
    if roster is not None:
        extra_vars["gorkheavy_models"] = roster
    result = run_ensemble(kubeconfig, cache, extra_vars, *extra)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    return result.stdout
