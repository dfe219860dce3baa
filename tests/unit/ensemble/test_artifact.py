"""The orchestrator's artifact, built by the render, installed exactly as the pod installs it, offline.

The wheelhouse the render wrote (``artifacts/<name>.tar``) is unpacked as the role unpacks it on the server
node, and the install script from the rendered ConfigMap ``orchestrator-install`` - the file the pod's init
container runs - installs it into a fresh virtual environment, inside a network namespace with only a
loopback interface, with a plain Python 3.11 (not this virtual environment) as the image's ``python3``.
``gorkheavy --help`` and ``gorkheavy doctor`` then run from there: against the cluster's service names
(which cannot resolve here: doctor names each model and its fix) and against an Ollama stand-in started
inside the same namespace (all ready).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.unit.ensemble.rendering import ROOT, Rendered

BASE_PYTHON = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"


def _unpack(example: Rendered, into: Path) -> Path:
    (archive,) = (example.directory / "artifacts").glob("orchestrator-*.tar")
    name = archive.name.removesuffix(".tar")
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        assert all(m.name == name or m.name.startswith(f"{name}/") for m in members), (
            "one directory per build"
        )
        assert all(m.uid == 0 and m.gid == 0 and m.mtime == 315532800 for m in members), (
            "reproducible archive"
        )
        tar.extractall(into, filter="data")
    return into / name


def test_the_wheelhouse_is_content_addressed_and_complete(example: Rendered, tmp_path: Path) -> None:
    wheelhouse = _unpack(example, tmp_path)
    sums = (wheelhouse / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
    listed = {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in sums}
    assert set(listed) == {p.name for p in wheelhouse.glob("*.whl")}
    for name, digest in listed.items():
        assert hashlib.sha256((wheelhouse / name).read_bytes()).hexdigest() == digest
    overall = hashlib.sha256("\n".join(sums).encode()).hexdigest()
    annotations = example.get("Deployment", "orchestrator")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["gorkheavy.lite/artifact-sha256"] == overall
    assert wheelhouse.name == annotations["gorkheavy.lite/artifact"] == f"orchestrator-0.1.0-{overall[:16]}"
    names = {p.name.split("-", 1)[0].lower() for p in wheelhouse.glob("*.whl")}
    assert {
        "gorkheavy_lite",
        "aiohttp",
        "pydantic",
        "pydantic_core",
        "pyyaml",
        "prometheus_client",
    } <= names
    assert all("-none-any" in p.name or "manylinux" in p.name for p in wheelhouse.glob("*.whl"))
    assert "asyncpg" not in names, "the postgres extra only with PostgreSQL memory"


@pytest.mark.skipif(
    shutil.which("unshare") is None, reason="needs unshare (util-linux) for a namespace with no network"
)
def test_installed_offline_as_the_pod_does_then_help_and_doctor_run(
    example: Rendered, tmp_path: Path
) -> None:
    wheelhouse = _unpack(example, tmp_path / "node")
    install = example.get("ConfigMap", "orchestrator-install")["data"]["install.sh"]
    (tmp_path / "install.sh").write_text(install, encoding="utf-8")
    config = example.get("ConfigMap", "orchestrator-config")["data"]["config.yml"]
    (tmp_path / "config.yml").write_text(config, encoding="utf-8")
    local = yaml.safe_load(config)
    for entry in local["models"]:
        entry["base_url"] = "http://127.0.0.1:11434"
    local["memory"]["path"] = str(tmp_path / "state" / "memory.db")
    (tmp_path / "local.yml").write_text(yaml.safe_dump(local), encoding="utf-8")
    image_bin = tmp_path / "image-bin"
    image_bin.mkdir()
    (image_bin / "python3").symlink_to(BASE_PYTHON)
    models = " ".join(f"--model {m['model']}" for m in local["models"])
    script = textwrap.dedent(
        f"""\
        set -eu
        ip link set lo up
        # The pod's install step: the same script, the same variables.
        export GORKHEAVY_WHEELHOUSE={wheelhouse} GORKHEAVY_PREFIX={tmp_path}/venv GORKHEAVY_EXTRAS=
        sh {tmp_path}/install.sh
        export PATH={tmp_path}/venv/bin:{image_bin}:/usr/bin:/bin
        echo "== help"
        gorkheavy --help
        echo "== doctor, cluster names"
        set +e
        GORKHEAVY_CONFIG={tmp_path}/config.yml gorkheavy doctor --timeout 2
        echo "doctor exit $?"
        set -e
        echo "== doctor, stand-in"
        (cd {ROOT}/app && exec {sys.executable} -m gorkheavy_lab.ollama --port 11434 {models}) &
        standin=$!
        for i in $(seq 1 100); do
          python3 -c 'import socket; socket.create_connection(("127.0.0.1", 11434), 1)' 2>/dev/null && break
          sleep 0.1
        done
        set +e
        GORKHEAVY_CONFIG={tmp_path}/local.yml gorkheavy doctor --timeout 5
        echo "doctor exit $?"
        kill $standin
        echo "== outside network"
        python3 -c 'import socket; socket.create_connection(("151.101.0.223", 443), 2)'
        echo "connect exit $?"
        """
    )
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    result = subprocess.run(
        ["unshare", "--net", "sh", "-c", script],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=300,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "install: gorkheavy-lite 0.1.0 installed" in out
    help_text = out.split("== help", 1)[1].split("== doctor", 1)[0]
    for command in ("chat", "ask", "serve", "doctor"):
        assert command in help_text
    cluster = out.split("== doctor, cluster names", 1)[1].split("== doctor, stand-in", 1)[0]
    assert "doctor exit 1" in cluster
    for name in ("promptimizer", "llama", "qwen", "qwen-small", "judge"):
        assert f"http://{name}:11434" in cluster, cluster
    standin = out.split("== doctor, stand-in", 1)[1].split("== outside network", 1)[0]
    assert "doctor exit 0" in standin, standin
    assert "connect exit 1" in out.split("== outside network", 1)[1], "the namespace really has no network"
    installed = subprocess.run(
        [str(tmp_path / "venv" / "bin" / "python"), "-c", "import gorkheavy, sys; print(gorkheavy.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        env={**env, "PYTHONPATH": ""},
    )
    assert installed.stdout.startswith(str(tmp_path / "venv")), (
        "the app comes from the wheelhouse, not the checkout"
    )
