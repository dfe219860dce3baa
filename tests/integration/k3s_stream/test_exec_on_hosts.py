"""Exec, logs and a terminal through real nodes: the built stand-in on two systemd test hosts (a server and an
agent, ``kstream-*``), a pod bound to the agent run by its kubelet, and the real kubectl on this machine going
through the server's API to the agent's ``:10250`` (the API server's client certificate, the kubelet's serving
certificate checked against the server CA), on the nodes' Debian python3 and python3-aiohttp 3.8."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pexpect
import pytest
import yaml
from gorkheavy_lab.k3s.build import build
from gorkheavy_lab.k3s.testing import kubectl as run_kubectl
from gorkheavy_lab.k3s.testing import kubectl_binary

from tests.hosts.systemd_host import SystemdHost, build_image
from tests.integration.k3s_standin.test_cluster_hosts import _install
from tests.unit.k3s_stream.harness import edit_and_interrupt

pytestmark = [pytest.mark.hosts, pytest.mark.slow]
PROMPT = "pod$ "
POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "shell", "namespace": "default"},
    "spec": {
        "containers": [
            {
                "name": "main",
                "image": "python:3.11-slim",
                "command": [
                    "python3",
                    "-c",
                    "import time; print('hello from the pod', flush=True); time.sleep(3600)",
                ],
                "env": [{"name": "PS1", "value": PROMPT}],
            }
        ],
    },
}


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    build_image()
    tmp = tmp_path_factory.mktemp("kstream-hosts")
    artifact = tmp / "artifact"
    build(artifact, "v1.36.4+k3s1", "amd64")
    key = tmp / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    hosts: list[SystemdHost] = []
    try:
        with ThreadPoolExecutor(2) as pool:
            hosts = list(
                pool.map(
                    lambda p: SystemdHost.start(p, key.with_suffix(".pub")),
                    ["kstream-server", "kstream-agent"],
                )
            )
        server, agent = hosts
        _install(server, artifact, "k3s.service", "server", {"token": "kstream", "tls-san": [server.address]})
        server.sh("systemctl start k3s.service")
        _install(
            agent,
            artifact,
            "k3s-agent.service",
            "agent",
            {"server": f"https://{server.address}:6443", "token": "kstream"},
        )
        agent.sh("systemctl start k3s-agent.service")
        config = yaml.safe_load(server.sh("cat /etc/rancher/k3s/k3s.yaml").stdout)
        config["clusters"][0]["cluster"]["server"] = f"https://{server.address}:6443"
        path = tmp / "kubeconfig"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        pod = {**POD, "spec": {**POD["spec"], "nodeName": agent.name}}  # type: ignore[dict-item]
        manifest = tmp / "pod.yaml"
        manifest.write_text(yaml.safe_dump(pod))
        run_kubectl(path, "apply", "-f", str(manifest))
        run_kubectl(path, "wait", "--for=condition=Ready", "pod/shell", "--timeout=60s")
        yield path
    finally:
        for host in hosts:
            host.remove()


def test_logs_and_exec_exit_codes_and_stdin(kubeconfig: Path) -> None:
    # Ready comes with the process start; its first line a moment later
    deadline = time.monotonic() + 20
    while (logs := run_kubectl(kubeconfig, "logs", "shell").stdout) == "" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert logs == "hello from the pod\n"
    failed = run_kubectl(kubeconfig, "exec", "shell", "--", "sh", "-c", "echo out; exit 4", check=False)
    assert (failed.returncode, failed.stdout, failed.stderr) == (
        4,
        "out\n",
        "command terminated with exit code 4\n",
    )
    fed = subprocess.run(
        [kubectl_binary(), "--kubeconfig", str(kubeconfig), "exec", "-i", "shell", "--", "cat"],
        input="through the agent\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (fed.returncode, fed.stdout) == (0, "through the agent\n"), fed.stderr


def test_terminal_through_the_agent(kubeconfig: Path) -> None:
    child = pexpect.spawn(
        kubectl_binary(),
        ["--kubeconfig", str(kubeconfig), "exec", "-it", "shell", "--", "sh"],
        dimensions=(24, 80),
        timeout=20,
        encoding="utf-8",
        codec_errors="replace",
    )
    child.expect_exact(PROMPT)
    edit_and_interrupt(child, PROMPT)
    child.sendline("stty size")
    child.expect_exact("24 80\r\n")
    child.expect_exact(PROMPT)
    child.sendline("exit 3")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 3
