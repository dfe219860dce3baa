"""A server across restarts: the generated token is kept, the kubeconfig rewritten with the default mode 0600
(or K3S_KUBECONFIG_MODE), another token afterwards is fatal as in K3s, a busy port is fatal, a newer build on
the same data reports its version, an agent rides out a server restart, a stop with a watch open takes seconds
as in K3s."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gorkheavy_lab.k3s import serving
from gorkheavy_lab.k3s.testing import (
    Process,
    build_artifact,
    free_port,
    kubectl,
    kubectl_binary,
    running,
    server_args,
)

# logged once the server's own Node is registered ("k3s is up and running" comes before)
REGISTERED = "Annotations and labels have been set successfully"


def _args(root: Path, port: int, *extra: str) -> list[str]:
    return server_args(root, port, "k3sim-restart", *extra)


def test_generated_token_kept_and_other_token_fatal(k3s_binary: Path, tmp_path: Path) -> None:
    port = free_port()
    kubeconfig = tmp_path / "etc" / "k3s" / "k3s.yaml"
    with running(k3s_binary, tmp_path, _args(tmp_path, port)):
        first = (tmp_path / "data" / "server" / "token").read_text()
        assert kubeconfig.stat().st_mode & 0o777 == 0o600
    kubeconfig.chmod(0o644)
    with running(k3s_binary, tmp_path, _args(tmp_path, port), env={"K3S_KUBECONFIG_MODE": "0640"}):
        assert (tmp_path / "data" / "server" / "token").read_text() == first
        assert kubeconfig.stat().st_mode & 0o777 == 0o640
    result = subprocess.run(
        [sys.executable, str(k3s_binary), *_args(tmp_path, port, "--token", "another-secret")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"GORKHEAVY_K3S_ETC": str(tmp_path / "etc"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert re.search(
        r'level=fatal msg="starting kubernetes: preparing server: bootstrap data already found and encrypted '
        r'with different token"\n$',
        result.stderr,
    )
    assert (tmp_path / "data" / "server" / "token").read_text() == first


def test_operator_token_and_busy_port(k3s_binary: Path, tmp_path: Path) -> None:
    port = free_port()
    token_file = tmp_path / "token"
    token_file.write_text("operator$%:\\secret\n")
    with running(k3s_binary, tmp_path / "a", _args(tmp_path / "a", port, "--token-file", str(token_file))):
        token = (tmp_path / "a" / "data" / "server" / "token").read_text()
        assert token.endswith("::server:operator$%:\\secret\n")
        result = subprocess.run(
            [sys.executable, str(k3s_binary), *_args(tmp_path / "b", port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={"GORKHEAVY_K3S_ETC": str(tmp_path / "b" / "etc"), "PATH": "/usr/bin:/bin"},
        )
    assert result.returncode == 1
    assert (
        'level=fatal msg="starting kubernetes: preparing server: '
        f'listen tcp 0.0.0.0:{port}: bind: address already in use"' in result.stderr
    )


def test_second_server_joining_is_refused_clearly(k3s_binary: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(k3s_binary), *_args(tmp_path, free_port(), "--server", "https://10.0.0.1:6443")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"GORKHEAVY_K3S_ETC": str(tmp_path / "etc"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert 'level=fatal msg="the K3s stand-in runs a single server' in result.stderr
    assert not (tmp_path / "data" / "server").exists()


def test_upgrade_reports_the_new_version_on_the_same_data(k3s_binary: Path, tmp_path: Path) -> None:
    newer = build_artifact(tmp_path / "newer", "v1.36.5+k3s1")
    port = free_port()
    kubeconfig = tmp_path / "etc" / "k3s" / "k3s.yaml"
    with running(k3s_binary, tmp_path, _args(tmp_path, port), ready=REGISTERED):
        token = (tmp_path / "data" / "server" / "token").read_text()
    with running(newer, tmp_path, _args(tmp_path, port), ready=REGISTERED):
        rows = kubectl(kubeconfig, "get", "nodes").stdout.splitlines()
        version = kubectl(kubeconfig, "version").stdout
    assert rows[1].split()[0:2] == ["k3sim-restart", "Ready"]
    assert rows[1].split()[4] == "v1.36.5+k3s1"
    assert "Server Version: v1.36.5+k3s1" in version
    assert (tmp_path / "data" / "server" / "token").read_text() == token


def test_agent_survives_a_server_restart(k3s_binary: Path, tmp_path: Path) -> None:
    port = free_port()
    kubeconfig = tmp_path / "etc" / "k3s" / "k3s.yaml"
    server = Process(k3s_binary, tmp_path, _args(tmp_path, port)).start()
    try:
        server.wait_for(REGISTERED)
        token = (tmp_path / "data" / "server" / "token").read_text().strip()
        agent_args = [
            "agent",
            "-c",
            str(tmp_path / "none.yaml"),
            "--server",
            f"https://127.0.0.1:{port}",
            "--token",
            token,
            "--node-name",
            "k3sim-survivor",
            "--node-ip",
            "127.0.0.1",
            "--lb-server-port",
            str(free_port()),
            "-d",
            str(tmp_path / "agent" / "data"),
        ]
        with running(k3s_binary, tmp_path / "agent", agent_args, ready=REGISTERED) as agent:
            server.stop()
            server = Process(k3s_binary, tmp_path, _args(tmp_path, port)).start()
            server.wait_for(REGISTERED)

            def renewed() -> str:
                """The lease's renewTime; empty while there is none (its first renewal may have failed)."""
                lease = kubectl(
                    kubeconfig,
                    "get",
                    "lease",
                    "-n",
                    "kube-node-lease",
                    "k3sim-survivor",
                    "-o",
                    "json",
                    check=False,
                )
                return str(json.loads(lease.stdout)["spec"]["renewTime"]) if lease.returncode == 0 else ""

            before = renewed()
            deadline = time.monotonic() + 25  # two lease renewal periods (10 s) and some
            while renewed() == before and time.monotonic() < deadline:
                time.sleep(0.5)
            after = renewed()
            row = kubectl(kubeconfig, "get", "node", "k3sim-survivor").stdout.splitlines()[1].split()
            log = agent.log()
        assert after > before  # heartbeats go on (or begin) through the same agent process
        assert row[1] == "Ready"
        assert log.count(REGISTERED) == 1  # it never had to join again
    finally:
        server.stop()


def test_a_stop_ends_open_watches_and_takes_seconds(k3s_binary: Path, tmp_path: Path) -> None:
    """The agents' watches never end on their own: a stop must end them (as the apiserver does at shutdown)
    rather than wait for the clients, or every restart of the server takes a minute."""
    kubeconfig = tmp_path / "etc" / "k3s" / "k3s.yaml"
    watch_argv = [kubectl_binary(), "--kubeconfig", str(kubeconfig), "get", "nodes", "-w", "--no-headers"]
    with (
        running(k3s_binary, tmp_path, _args(tmp_path, free_port()), ready=REGISTERED) as server,
        subprocess.Popen(watch_argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as watch,
    ):
        assert watch.stdout is not None
        assert watch.stdout.readline().split()[:2] == ["k3sim-restart", "Ready"]  # the watch is open
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        try:
            rc = server.proc.wait(20)  # K3s stops in a few seconds; the watch held it for 60 s
        except subprocess.TimeoutExpired:
            pytest.fail("the server did not stop within 20 s of SIGTERM while a watch was open")
        finally:
            watch.kill()
    assert rc == 0, server.log()


def test_a_stop_that_hangs_ends_the_process_after_the_grace() -> None:
    """Should the orderly stop hang (a peer that stopped answering, a machine too busy to finish it), the
    process still ends soon after SIGTERM, as K3s does, instead of at systemd's stop timeout (90 s)."""
    script = (
        "import time\n"
        "from gorkheavy_lab.k3s import serving\n"
        "from gorkheavy_lab.k3s.logs import Logger\n"
        "serving.exit_after(1.0, Logger())\n"
        "time.sleep(60)  # the stop that never finishes\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3] / "app")}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=30, check=False
    )
    assert time.monotonic() - started < 10
    assert done.returncode == 0, done.stderr
    assert "Shutdown did not finish within 1s of the signal; exiting" in done.stderr, done.stderr
    # the server's grace stays below what cluster_lifecycle allows a `systemctl stop k3s.service` (20 s)
    assert serving.SERVER_STOP_GRACE < 20
