"""Fixtures: the stand-in built once per session, and a running server (module scope) on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gorkheavy_lab.k3s.testing import Process, build_artifact, free_port, running


@pytest.fixture(scope="session")
def k3s_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_artifact(tmp_path_factory.mktemp("k3s-artifact"))


@pytest.fixture(scope="module")
def server(k3s_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    root = tmp_path_factory.mktemp("k3s-server")
    port = free_port()
    config = root / "etc" / "k3s" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(
        'write-kubeconfig-mode: "0640"\n'
        "tls-san: [k3s.example.test]\n"
        "node-label: [gorkheavy.io/role=orchestrator]\n"
        # a short grace period for the Unknown test needs short leases too (renewed every quarter: 1 s)
        "kube-controller-manager-arg: [node-monitor-grace-period=4s, node-monitor-period=1s]\n"
        "kubelet-arg: [node-lease-duration-seconds=4]\n"
    )
    (config.parent / "config.yaml.d").mkdir()
    (config.parent / "config.yaml.d" / "10-taint.yaml").write_text(
        "node-taint: [node-role.kubernetes.io/control-plane=true:NoSchedule]\n"
    )
    args = [
        "server",
        "-c",
        str(config),
        "-d",
        str(root / "data"),
        "--https-listen-port",
        str(port),
        "--node-name",
        "k3sim-server",
        "--node-ip",
        "127.0.0.1",
        "--write-kubeconfig",
        str(root / "k3s.yaml"),
    ]
    # "k3s is up and running" (READY=1) comes with the API; wait for the server's own Node as well
    with running(
        k3s_binary, root, args, ready="Annotations and labels have been set successfully"
    ) as process:
        process.port = port  # type: ignore[attr-defined]
        yield process
