"""The command line as K3s has it: version format, flag refusal, config file merge; unknown config keys
warned as K3s does, then refused."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from gorkheavy_lab.k3s import flags
from gorkheavy_lab.k3s.build import build
from gorkheavy_lab.k3s.logs import Logger

FATAL = re.compile(r'^time="[0-9T:+Z-]+" level=fatal msg="(?P<msg>.*)"$')


def run(binary: Path, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    # never read this machine's /etc/rancher/k3s/config.yaml: the default path points at nothing here
    env = {**os.environ, "K3S_CONFIG_FILE": str(config or "/nonexistent/k3sim/config.yaml")}
    env.pop("K3S_TOKEN", None)
    env.pop("K3S_URL", None)
    return subprocess.run(
        [sys.executable, str(binary), *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


@pytest.mark.parametrize("flag", ["--version", "-v"])
def test_version_prints_k3s_two_line_format(k3s_binary: Path, flag: str) -> None:
    result = run(k3s_binary, flag)
    assert result.returncode == 0
    assert re.fullmatch(
        r"k3s version v1\.36\.4\+k3s1 \([0-9a-f]{8}\)\ngo version go1\.\d+\.\d+\n", result.stdout
    )


def test_version_of_another_build_is_that_version(tmp_path: Path) -> None:
    build(tmp_path, "v1.36.5+k3s1", "arm64")
    result = run(tmp_path / "k3s-arm64", "--version")
    assert result.stdout.startswith("k3s version v1.36.5+k3s1 (")


@pytest.mark.parametrize(
    ("command", "flag", "name"),
    [
        ("server", "--bogus-flag", "bogus-flag"),
        ("server", "--tls_san=x", "tls_san"),
        ("agent", "--tls-san=x", "tls-san"),
        ("agent", "--node-labels", "node-labels"),
    ],
)
def test_unknown_flag_is_a_usage_error_exit_1(k3s_binary: Path, command: str, flag: str, name: str) -> None:
    result = run(k3s_binary, command, flag)
    assert result.returncode == 1
    assert result.stdout.startswith(
        f"Incorrect Usage: flag provided but not defined: -{name}\n\nNAME:\n   k3s {command} - "
    )
    last = result.stderr.strip().splitlines()[-1]
    match = FATAL.match(last)
    assert match is not None, last
    assert match["msg"] == f"flag provided but not defined: -{name}"


def test_value_flag_without_value_and_bad_boolean(k3s_binary: Path) -> None:
    result = run(k3s_binary, "agent", "--server")
    assert result.returncode == 1
    assert 'msg="flag needs an argument: -server"' in result.stderr
    result = run(k3s_binary, "server", "--cluster-init=maybe")
    assert 'msg="invalid boolean value \\"maybe\\" for -cluster-init: parse error"' in result.stderr


def test_agent_needs_token_and_server(k3s_binary: Path, tmp_path: Path) -> None:
    result = run(k3s_binary, "agent", "-c", str(tmp_path / "none.yaml"))
    assert result.returncode == 1
    assert 'msg="--token is required"' in result.stderr
    result = run(k3s_binary, "agent", "-c", str(tmp_path / "none.yaml"), "--token", "abc")
    assert 'msg="--server is required"' in result.stderr


def test_config_unknown_keys_warned_as_k3s_does_then_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("tls_san: [a.example, b.example]\nnode-labels: [x=y]\nnode-label: [a=b]\n")
    with pytest.raises(flags.UnknownKeyError) as caught:
        flags.resolve("server", ["-c", str(config)], {}, Logger())
    err = capsys.readouterr().err.splitlines()
    # K3s's own line, once per argument the key stands for, before the refusal
    warned = [line for line in err if "level=warning" in line]
    assert [line.split(" level=", 1)[1] for line in warned] == [
        'warning msg="Unknown flag --tls_san found in config.yaml, skipping\\n"',
        'warning msg="Unknown flag --tls_san found in config.yaml, skipping\\n"',
        'warning msg="Unknown flag --node-labels found in config.yaml, skipping\\n"',
    ]
    assert str(caught.value) == (
        f'config key "tls_san" in {config} is not a flag of "k3s server"; the closest valid key is '
        f'"tls-san"; config key "node-labels" in {config} is not a flag of "k3s server"; the closest valid '
        'key is "node-label" (K3s only warns and skips unknown keys; the K3s stand-in refuses them)'
    )


def test_config_key_of_the_other_command_is_refused_too(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("server: https://x:6443\ntls-san: [a.example]\n")
    with pytest.raises(flags.UnknownKeyError, match=r'config key "tls-san" in .* of "k3s agent"'):
        flags.resolve("agent", ["-c", str(config)], {}, Logger())


@pytest.mark.parametrize(
    ("where", "key", "close"),
    [
        ("config.yaml", "write-kubeconfig-mod", "write-kubeconfig-mode"),
        ("config.yaml.d/20-extra.yaml", "node-lable", "node-label"),
    ],
)
def test_unknown_config_key_stops_k3s_before_it_writes_anything(
    k3s_binary: Path, tmp_path: Path, where: str, key: str, close: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("node-label: [a=b]\n")
    target = tmp_path / where
    target.parent.mkdir(exist_ok=True)
    with target.open("a") as out:
        out.write(f"{key}: x\n")
    data = tmp_path / "data"
    result = run(k3s_binary, "server", "-d", str(data), config=config)
    assert result.returncode == 1
    *_, warning, fatal = result.stderr.strip().splitlines()
    assert warning.endswith(f' level=warning msg="Unknown flag --{key} found in config.yaml, skipping\\n"')
    match = FATAL.match(fatal)
    assert match is not None, fatal
    assert match["msg"] == (
        f'config key \\"{key}\\" in {target} is not a flag of \\"k3s server\\"; the closest valid key is '
        f'\\"{close}\\" (K3s only warns and skips unknown keys; the K3s stand-in refuses them)'
    )
    assert not data.exists()


def test_config_dropins_append_and_cli_precedence(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("node-label: [a=1]\nnode-name: from-main\n")
    dropins = tmp_path / "config.yaml.d"
    dropins.mkdir()
    (dropins / "20-b.yaml").write_text("node-label+: [c=3]\n")
    (dropins / "10-a.yml").write_text("node-label+: [b=2]\nnode-name: from-dropin\n")
    (dropins / "30-ignored.txt").write_text("node-name: never\n")
    values = flags.resolve("agent", ["-c", str(config), "--node-name", "from-cli"], {}, Logger())
    assert values["node-label"] == ["a=1", "b=2", "c=3"]
    assert values["node-name"] == "from-cli"
    # YAML 1.1 reads an unquoted 0644 as the octal integer 420, exactly as K3s's yaml.v2 does
    server_config = tmp_path / "server.yaml"
    server_config.write_text("write-kubeconfig-mode: 0644\n")
    values = flags.resolve("server", ["-c", str(server_config)], {}, Logger())
    assert values["write-kubeconfig-mode"] == "420"


def test_config_path_from_environment(tmp_path: Path) -> None:
    config = tmp_path / "other.yaml"
    config.write_text("node-name: from-env-config\n")
    values = flags.resolve(
        "agent", [], {"K3S_CONFIG_FILE": str(config), "K3S_URL": "https://x:6443"}, Logger()
    )
    assert values["node-name"] == "from-env-config"
    assert values["server"] == "https://x:6443"


def test_build_writes_release_assets_reproducibly(tmp_path: Path) -> None:
    first = build(tmp_path / "a", "v1.36.4+k3s1", "amd64")
    second = build(tmp_path / "b", "v1.36.4+k3s1", "amd64")
    assert first == second
    assert sorted(first) == ["k3s", "k3s-airgap-images-amd64.tar"]
    sums = (tmp_path / "a" / "sha256sum-amd64.txt").read_text()
    for name, digest in first.items():
        assert f"{digest}  {name}\n" in sums
        assert hashlib.sha256((tmp_path / "a" / name).read_bytes()).hexdigest() == digest
    binary = (tmp_path / "a" / "k3s").read_bytes()
    assert binary.startswith(b"#!/usr/bin/env python3\n")
    assert (tmp_path / "a" / "k3s").stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize(("version", "arch"), [("1.36.4", "amd64"), ("v1.36.4+k3s1", "armhf")])
def test_build_refuses_bad_version_or_arch(tmp_path: Path, version: str, arch: str) -> None:
    with pytest.raises(ValueError, match=r"version|arch"):
        build(tmp_path / "x", version, arch)
    assert not (tmp_path / "x").exists()


def test_flag_fixture_is_the_v1_36_list_and_agrees_with_the_roles() -> None:
    server, agent = flags.specs("server"), flags.specs("agent")
    for name in (
        "tls-san",
        "node-ip",
        "node-label",
        "node-taint",
        "write-kubeconfig-mode",
        "disable",
        "flannel-backend",
        "cluster-cidr",
        "service-cidr",
        "token-file",
        "disable-agent",
    ):
        assert name in server, name
    assert {"server", "token", "token-file", "node-ip", "node-label", "node-taint"} <= set(agent)
    assert "write-kubeconfig-name" not in server  # added in v1.37 (k3s-io/k3s #14440)
    assert "tls-san" not in agent
    assert server["node-label"].repeatable
    assert not server["write-kubeconfig-mode"].repeatable
    # the roles check config keys against their own copy of the same upstream lists: both must agree
    roles = Path(__file__).resolve().parents[3] / "roles" / "k3s_common" / "vars" / "flags.yml"
    lists = yaml.safe_load(roles.read_text())["__k3s_common_flags"]["1.36"]
    assert sorted(lists["server"]) == sorted(server)
    assert sorted(lists["agent"]) == sorted(agent)
